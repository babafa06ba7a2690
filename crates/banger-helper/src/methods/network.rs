//! Privileged methods: network (filled in by the helper issue).
