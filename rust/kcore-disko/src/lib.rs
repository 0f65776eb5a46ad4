//! A node storage spec turned into disko fragments, validated in levels, and planned
//! against the block devices that are really there.
