//! Privileged methods: storage (filled in by the helper issue).
