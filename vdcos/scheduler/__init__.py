"""The vdcos scheduler: a pure core (core/), an etcd-fed cache, a batching worker that commits
with optimistic concurrency, and thin gRPC servicers."""
