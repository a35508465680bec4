"""maskfarm's shared core: what a job, a mask and a frame file are, the same for server, worker and client.

Imports only the standard library, numpy and Pillow (OpenEXR only where an EXR is read or written),
and nothing else of maskfarm: every other package builds on it.
"""
