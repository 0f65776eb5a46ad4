//! kcore resource and manifest types (`kind`/`metadata`/`spec`), API request and response
//! types, and validation of names, sizes, device paths and flake refs. No I/O.

pub mod cluster;
pub mod clusterupdate;
pub mod controller;
pub mod error;
pub mod install;
pub mod inventory;
pub mod plan;
pub mod report_limits;
pub mod resource;
pub mod rollout;
pub mod validate;
pub mod version;
pub mod vm;
pub mod yaml;

pub use error::{ApiError, ErrorCode};
