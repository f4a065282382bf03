//! A device wrapper that injects seeded faults in either direction: drop,
//! duplicate, reorder, corrupt.

pub struct FaultInjector<D> {
    pub inner: D,
}
