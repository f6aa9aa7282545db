//! The sharing report: which keys look shared between devices.
