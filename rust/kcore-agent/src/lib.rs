//! The kcore node agent: inventory, day-2 storage and configuration, served over HTTPS,
//! and registration with the controllers (`registration`).

pub mod registration;
