"""Projects and their quotas in etcd: the records, and the charge every create of a project's
VM, network or volume makes in its own transaction."""
