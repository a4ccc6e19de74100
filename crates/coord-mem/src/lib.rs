//! coord-mem
