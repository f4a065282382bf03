//! The stack: socket table, 4-tuple demux, and `poll`.
