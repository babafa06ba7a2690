//! Host kernels (being written).
