//! What a node reports about itself: disks, NICs and its storage backend's state. Produced
//! by the agent, stored by the controller, printed by kctl.
