//! The deterministic simulator: virtual time, several stacks on links with
//! latency, bandwidth, loss, duplication, reordering, corruption and
//! partitions, all from one seed.
