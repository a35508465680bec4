"""Auth and TLS against real server processes (no worker: queued jobs are enough).

Bearer tokens from a token file (re-read while the server runs), jobs visible only to the
token's caller, TLS and mutual TLS with certificates made here, and the client library's
and the CLI's token and TLS settings.
"""

from __future__ import annotations

import datetime
import ipaddress
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from maskfarm.cli import main as maskfarm
from maskfarm.client.client import Client
from maskfarm.client.errors import InvalidRequest, JobNotFound, MaskfarmError, Unauthenticated, Unavailable
from maskfarm.server.tokens import TokenFile
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc
from tests.images import encoded_image
from tests.services import ServerProcess, maskfarm_server

PNG = encoded_image("PNG")
ALICE = "alice-token-" + uuid.uuid4().hex
BOB = "bob-token-" + uuid.uuid4().hex


# -- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate it signed (for 127.0.0.1 and localhost), a
    client certificate it signed, and a client certificate signed by a CA nobody trusts."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    folder: Path, name: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, stranger_ca_key = _key(), _key()
    ca = _certificate("maskfarm test CA", ca_key, None, ca_key, ca=True)
    stranger_ca = _certificate("untrusted CA", stranger_ca_key, None, stranger_ca_key, ca=True)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    server = _write(folder, "server", _certificate("127.0.0.1", server_key, ca, ca_key, server=True), server_key)
    client = _write(folder, "client", _certificate("render-node", client_key, ca, ca_key), client_key)
    stranger = _write(
        folder, "stranger", _certificate("stranger", stranger_key, stranger_ca, stranger_ca_key), stranger_key
    )
    return Pki(ca_path, *server, *client, *stranger)


# -- servers ---------------------------------------------------------------------------


def namespace() -> str:
    return f"mfauth{uuid.uuid4().hex[:8]}"


def token_file(folder: Path, tokens: dict[str, str]) -> Path:
    path = folder / "tokens"
    lines = ["# maskfarm tokens: TOKEN NAME", ""] + [f"{token} {name}" for token, name in tokens.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return token_file(tmp_path_factory.mktemp("tokens"), {ALICE: "alice", BOB: "bob"})


@pytest.fixture(scope="module")
def auth_server(redis_url: str, tokens: Path) -> Iterator[ServerProcess]:
    """Plaintext, with bearer tokens."""
    with maskfarm_server(redis_url, namespace(), "--auth-tokens", str(tokens)) as server:
        yield server


@pytest.fixture(scope="module")
def tls_server(redis_url: str, tokens: Path, pki: Pki) -> Iterator[ServerProcess]:
    """TLS, with bearer tokens."""
    with maskfarm_server(
        redis_url,
        namespace(),
        "--auth-tokens",
        str(tokens),
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        credentials=grpc.ssl_channel_credentials(pki.ca.read_bytes()),
    ) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(redis_url: str, pki: Pki) -> Iterator[ServerProcess]:
    """Mutual TLS, no tokens."""
    credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    with maskfarm_server(
        redis_url,
        namespace(),
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        "--tls-client-ca",
        str(pki.ca),
        credentials=credentials,
    ) as server:
        yield server


@pytest.fixture
def alice(auth_server: ServerProcess) -> Iterator[Client]:
    with Client(auth_server.target, token=ALICE, timeout=10) as client:
        yield client


@pytest.fixture
def bob(auth_server: ServerProcess) -> Iterator[Client]:
    with Client(auth_server.target, token=BOB, timeout=10) as client:
        yield client


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


# -- tokens ----------------------------------------------------------------------------


CALLS: dict[str, Callable[[pb_grpc.SegmentationStub, tuple], object]] = {
    "SubmitJob": lambda stub, md: stub.SubmitJob(
        pb.SubmitJobRequest(frames=[pb.Frame(data=PNG)], prompts=["car"]), metadata=md, timeout=10
    ),
    "GetJob": lambda stub, md: stub.GetJob(pb.GetJobRequest(job_id="0" * 32), metadata=md, timeout=10),
    "WatchJob": lambda stub, md: list(stub.WatchJob(pb.WatchJobRequest(job_id="0" * 32), metadata=md, timeout=10)),
    "CancelJob": lambda stub, md: stub.CancelJob(pb.CancelJobRequest(job_id="0" * 32), metadata=md, timeout=10),
    "ListJobs": lambda stub, md: stub.ListJobs(pb.ListJobsRequest(), metadata=md, timeout=10),
    "ListWorkers": lambda stub, md: stub.ListWorkers(pb.ListWorkersRequest(), metadata=md, timeout=10),
}


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize(
    "metadata, reason",
    [
        ((), "no credentials"),
        ((("authorization", "Basic YWxpY2U6c2VjcmV0"),), "malformed credentials"),
        ((("authorization", "Bearer"),), "malformed credentials"),
        (bearer("not-a-token-anyone-was-given"), "unknown or revoked token"),
    ],
    ids=["none", "basic", "empty", "unknown"],
)
def test_every_call_needs_a_known_bearer_token(
    auth_server: ServerProcess, method: str, metadata: tuple, reason: str
) -> None:
    with auth_server.channel() as channel:
        with pytest.raises(grpc.RpcError) as raised:
            CALLS[method](pb_grpc.SegmentationStub(channel), metadata)
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert reason in raised.value.details()


def test_a_known_token_is_let_through(auth_server: ServerProcess) -> None:
    with auth_server.channel() as channel:
        stub = pb_grpc.SegmentationStub(channel)
        assert CALLS["ListWorkers"](stub, bearer(ALICE)) is not None
        with pytest.raises(grpc.RpcError) as raised:
            CALLS["GetJob"](stub, (("authorization", f"bearer {BOB}"),))  # the scheme is case-insensitive
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_health_and_reflection_need_no_token(auth_server: ServerProcess) -> None:
    assert auth_server.health() == health_pb2.HealthCheckResponse.SERVING
    with auth_server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        )
    services = {service.name for service in replies[0].list_services_response.service}
    assert "maskfarm.v1.Segmentation" in services and "grpc.health.v1.Health" in services


def test_a_token_sees_only_its_own_jobs(alice: Client, bob: Client) -> None:
    label = {"test": uuid.uuid4().hex}
    mine = alice.submit([PNG], ["car"], labels=label, request_id="shot-sq010")
    theirs = bob.submit([PNG], ["car"], labels=label)
    assert len(mine.id) == 32 and int(mine.id, 16) >= 0, "job ids carry 128 random bits"
    assert mine.labels == label and mine.request_id == "shot-sq010", "the job reads back as submitted"
    assert alice.get(mine.id) == mine

    for call in (bob.get, bob.cancel, lambda job_id: list(bob.watch(job_id)), lambda job_id: list(bob.results(job_id))):
        with pytest.raises(JobNotFound) as raised:
            call(mine.id)
        assert raised.value.details == f"no job {mine.id!r} (unknown or expired)", "the same answer as an unknown id"

    assert [job.id for job in alice.jobs(labels=label)] == [mine.id]
    assert [job.id for job in bob.jobs(labels=label)] == [theirs.id]
    assert mine.id not in {job.id for job in bob.jobs()}
    assert alice.get(mine.id).state.value == "QUEUED", "bob's cancel did nothing"
    assert [event.state.value for event in [*alice.watch(alice.cancel(mine.id).id)]][-1] == "CANCELLED"
    bob.cancel(theirs.id)


def test_request_ids_are_per_token(alice: Client, bob: Client) -> None:
    request_id = str(uuid.uuid4())
    first = alice.submit([PNG], ["car"], request_id=request_id)
    again = alice.submit([PNG], ["sky"], request_id=request_id)
    guessed = bob.submit([PNG], ["sky"], request_id=request_id)
    assert again.id == first.id, "a repeat by the same token is the same job"
    assert guessed.id != first.id and guessed.prompts == ("sky",), "another token gets a job of its own"
    for client, job in ((alice, first), (bob, guessed)):
        client.cancel(job.id)


def test_the_owner_label_cannot_be_set_or_filtered(alice: Client) -> None:
    with pytest.raises(InvalidRequest, match=r"labels\['maskfarm.owner'\]: this label is reserved"):
        alice.submit([PNG], ["car"], labels={"maskfarm.owner": "bob"})
    with pytest.raises(InvalidRequest, match="reserved"):
        list(alice.jobs(labels={"maskfarm.owner": "bob"}))


def test_token_file_edits_apply_while_the_server_runs(redis_url: str, tmp_path: Path) -> None:
    carol = "carol-token-" + uuid.uuid4().hex
    path = token_file(tmp_path, {ALICE: "alice"})
    with (
        maskfarm_server(redis_url, namespace(), "--auth-tokens", str(path)) as server,
        Client(server.target, token=ALICE, timeout=10, retries=0) as alice,
        Client(server.target, token=carol, timeout=10, retries=0) as newcomer,
    ):
        job = alice.submit([PNG], ["car"])
        with pytest.raises(MaskfarmError, match="unknown or revoked token"):
            newcomer.workers()

        token_file(tmp_path, {carol: "alice"})  # rotate: a new token for the same caller, the old one gone
        assert _eventually(lambda: _works(newcomer)), "the added token was not accepted"
        assert _eventually(lambda: not _works(alice)), "the removed token still works"
        assert newcomer.get(job.id).id == job.id, "jobs belong to the name, not to the token"

        path.unlink()
        assert _eventually(lambda: not _works(newcomer)), "a vanished token file must accept no token"


def _works(client: Client) -> bool:
    try:
        client.workers()
        return True
    except MaskfarmError as error:
        assert error.code == "UNAUTHENTICATED"
        return False


def _eventually(condition: Callable[[], bool], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_token_file_skips_unusable_lines_and_reloads_on_change(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "tokens"
    path.write_text(f"{ALICE} alice  # trailing comment\nshort bob\n{BOB}\n{BOB} bad/name\n")
    tokens = TokenFile(path, clock=lambda: now[0])
    assert len(tokens) == 1 and tokens.name_of(ALICE) == "alice" and tokens.name_of(BOB) is None
    path.write_text(f"{BOB} bob\n")
    assert tokens.name_of(BOB) is None, "not looked at again within a second"
    now[0] = 1.5
    assert tokens.name_of(BOB) == "bob" and tokens.name_of(ALICE) is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--auth-tokens", "/nonexistent/tokens"], "token file /nonexistent/tokens: No such file"),
        (["--tls-cert", "/nonexistent/server.crt"], "tls_cert and tls_key go together"),
        (["--tls-cert", "/nonexistent/server.crt", "--tls-key", "/nonexistent/server.key"], "cannot read"),
        (["--tls-client-ca", "/nonexistent/ca.crt"], "needs tls_cert"),
    ],
)
def test_the_server_refuses_to_start_with_unusable_security_files(
    redis_url: str, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert maskfarm(["server", "--redis-url", redis_url, "--listen", "127.0.0.1:0", *flags]) == 2
    assert message in capsys.readouterr().err


# -- TLS -------------------------------------------------------------------------------


def test_tls_with_a_token_works_end_to_end(tls_server: ServerProcess, pki: Pki) -> None:
    with Client(tls_server.target, token=ALICE, ca_cert=pki.ca, timeout=10) as client:
        job = client.submit([PNG], ["car"])
        assert client.get(job.id) == job
        client.cancel(job.id)
    with Client(tls_server.target, ca_cert=pki.ca.read_bytes(), timeout=10) as anonymous:
        with pytest.raises(Unauthenticated) as raised:
            anonymous.get(job.id)
        assert raised.value.code == "UNAUTHENTICATED"


def test_plaintext_to_a_tls_server_is_unavailable(tls_server: ServerProcess) -> None:
    with Client(tls_server.target, token=ALICE, tls=False, timeout=5, retries=0) as client:
        with pytest.raises(Unavailable):
            client.workers()


def test_a_server_certificate_from_an_unknown_ca_is_unavailable(tls_server: ServerProcess, pki: Pki) -> None:
    with Client(tls_server.target, token=ALICE, ca_cert=pki.stranger_cert, timeout=5, retries=0) as client:
        with pytest.raises(Unavailable):
            client.workers()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_server: ServerProcess, pki: Pki) -> None:
    with Client(
        mtls_server.target, ca_cert=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key, timeout=10
    ) as client:
        client.cancel(client.submit([PNG], ["car"]).id)
    for cert, key in ((None, None), (pki.stranger_cert, pki.stranger_key)):
        with Client(
            mtls_server.target, ca_cert=pki.ca, client_cert=cert, client_key=key, timeout=5, retries=0
        ) as client:
            with pytest.raises(Unavailable):
                client.workers()


def test_a_client_certificate_needs_its_key(pki: Pki) -> None:
    with pytest.raises(InvalidRequest, match="client_cert and client_key go together"):
        Client("127.0.0.1:1", client_cert=pki.client_cert)


def test_the_client_takes_its_settings_from_the_environment(
    tls_server: ServerProcess, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MASKFARM_TOKEN", BOB)
    monkeypatch.setenv("MASKFARM_TLS_CA", str(pki.ca))
    with Client(tls_server.target, timeout=10) as client:
        assert client.workers() == []


# -- the command line ------------------------------------------------------------------


def test_the_cli_sends_its_token_and_tls_flags(
    tls_server: ServerProcess,
    mtls_server: ServerProcess,
    pki: Pki,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = ["--target", tls_server.target, "--tls-ca", str(pki.ca)]
    assert maskfarm(["health", *tls]) == 0
    assert maskfarm(["health", "--target", tls_server.target, "--timeout", "2"]) == 1, "plaintext to TLS"
    assert maskfarm(["jobs", *tls]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert maskfarm(["workers", *tls, "--token", ALICE]) == 0
    monkeypatch.setenv("MASKFARM_TOKEN", ALICE)
    assert maskfarm(["jobs", *tls]) == 0

    mutual = ["--target", mtls_server.target, "--tls-ca", str(pki.ca)]
    assert maskfarm(["health", *mutual, "--timeout", "2"]) == 1, "no client certificate"
    assert maskfarm(["health", *mutual, "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]) == 0
