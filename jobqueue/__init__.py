"""The Redis/RQ contract between server and worker: the keys maskfarm keeps, who writes them, and RQ.

Only this package touches maskfarm's Redis keys (``store``); server and worker both use it.
"""
