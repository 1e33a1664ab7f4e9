"""Live migration state: the records in etcd and the transactions that move them."""
