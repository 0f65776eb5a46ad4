//! Cluster resources and API types: node registration, heartbeats, status and approval,
//! certificates, storage classes.
