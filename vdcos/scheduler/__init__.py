"""The vdcos placement engine: a pure core (core/), an etcd-fed cache, and a batching worker
that commits with optimistic concurrency. No RPC: the API (vdcos/apiserver) and the controllers
reach it through placer.Placer."""
