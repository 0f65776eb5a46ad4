//! `kind: VM` on the generic routes (`/v1/vms`): operators apply and delete VMs,
//! controllers read them (the scheduler, issue 17, places them).

use kcore_api::resource::Kind;
use kcore_api::vm::VmSpec;
use kcore_pki::Role;

use super::resources::Definition;

pub(super) static DEFINITION: Definition = Definition {
    kind: Kind::Vm,
    read: &[Role::Admin, Role::Controller],
    write: &[Role::Admin],
    validate: kcore_api::resource::canonical::<VmSpec>,
};
