//! Privileged methods: files (filled in by the helper issue).
