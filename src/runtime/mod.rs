//! The runtime: a mio event loop around a device and std-like socket handles.
