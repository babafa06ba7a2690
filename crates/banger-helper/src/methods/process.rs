//! Privileged methods: process (filled in by the helper issue).
