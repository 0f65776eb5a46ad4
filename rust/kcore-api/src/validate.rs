//! Validation of operator input: names, sizes, device paths, mount points. Every error names
//! the field, the bad value and how to fix it.
