//! Registration with the controllers: register (trying each configured controller in
//! turn), heartbeat, and renew the node certificate from a CSR before it expires.
