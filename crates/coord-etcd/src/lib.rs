//! coord-etcd
