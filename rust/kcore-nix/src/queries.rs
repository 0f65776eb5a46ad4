//! Typed builders for the programs kcore runs to read state rather than change it: `lsblk`
//! (the block-device snapshot a disk plan is made against), `nix-instantiate --eval`
//! (disko validation levels 2 and 3, the agent's check of a submitted module) and the
//! agent's inventory reads (`ip`, `vgs`/`lvs`, `zpool`, `zfs`). Like [`crate::commands`], each `argv()` is the one
//! place the program's flags are spelled; callers fill in fields.
//!
//! Flags checked against the programs' documentation: util-linux `lsblk(8)` (`--json`,
//! `--bytes`, `--output <list>`, a comma-separated column list) and the Nix manual's
//! `nix-instantiate` page (<https://nix.dev/manual/nix/2.13/command-ref/nix-instantiate>,
//! the same synopsis as Debian's nix-bin 2.26 man page: `--eval [--strict] [--json]`,
//! `--argstr name value`, `--expr`, which makes the operand an expression, not a file).

use std::ffi::OsString;

use crate::runner::{Invocation, Program};

/// `lsblk --json --bytes --output <columns>`: every block device as JSON, sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lsblk {
    /// The columns to print, in order (`NAME`, `KNAME`, `PATH`, `SIZE`, ...).
    pub columns: Vec<String>,
}

impl Lsblk {
    /// A listing of these columns (`"NAME,KNAME,SIZE"` or a list of names).
    pub fn columns(columns: &str) -> Lsblk {
        Lsblk {
            columns: columns
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
        }
    }

    pub fn argv(&self) -> Vec<OsString> {
        vec![
            "--json".into(),
            "--bytes".into(),
            "--output".into(),
            self.columns.join(",").into(),
        ]
    }

    pub fn invocation(&self, lsblk: &Program) -> Invocation {
        Invocation::new(lsblk).args(self.argv())
    }
}

/// `nix-instantiate --eval --strict --json --expr <expr> [--argstr <name> <value>]...`:
/// evaluate an expression (a function of the `--argstr` arguments) fully to JSON.
///
/// Evaluations of anything submitted run restricted: append the arguments to a
/// [`crate::RestrictedEval::invocation`] with [`NixEval::append_to`] rather than starting
/// `nix-instantiate` bare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixEval {
    /// The expression (`--expr`), usually a function whose arguments `argstrs` name.
    pub expr: String,
    /// String arguments passed to the expression's function, in order.
    pub argstrs: Vec<(String, OsString)>,
    /// `--show-trace`: Nix prints the evaluation trace with an error (kcore-disko's level 3
    /// reads the innermost "while evaluating the option `…'" line to name the user's option
    /// when disko's own files fail).
    pub show_trace: bool,
    /// `--extra-experimental-features 'nix-command flakes'` for this call only, for an
    /// expression that uses `builtins.getFlake` (a rollout plan's look at a pinned flake).
    pub flakes: bool,
}

impl NixEval {
    /// An evaluation of `expr` with no arguments yet.
    pub fn expr(expr: impl Into<String>) -> NixEval {
        NixEval {
            expr: expr.into(),
            argstrs: Vec::new(),
            show_trace: false,
            flakes: false,
        }
    }

    /// Enable flakes for this evaluation (`builtins.getFlake`).
    pub fn flakes(mut self) -> NixEval {
        self.flakes = true;
        self
    }

    /// Ask for the evaluation trace with an error (`--show-trace`).
    pub fn show_trace(mut self) -> NixEval {
        self.show_trace = true;
        self
    }

    /// Pass `value` as the string argument `name`.
    pub fn argstr(mut self, name: impl Into<String>, value: impl Into<OsString>) -> NixEval {
        self.argstrs.push((name.into(), value.into()));
        self
    }

    pub fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if self.flakes {
            argv.extend([
                "--extra-experimental-features".into(),
                "nix-command flakes".into(),
            ]);
        }
        argv.extend::<[OsString; 5]>([
            "--eval".into(),
            "--strict".into(),
            "--json".into(),
            "--expr".into(),
            self.expr.as_str().into(),
        ]);
        for (name, value) in &self.argstrs {
            argv.extend(["--argstr".into(), name.as_str().into(), value.clone()]);
        }
        if self.show_trace {
            argv.push("--show-trace".into());
        }
        argv
    }

    /// These arguments after what `inv` already has (a restricted evaluator's options).
    pub fn append_to(&self, inv: Invocation) -> Invocation {
        inv.args(self.argv())
    }

    /// `nix-instantiate` with only these arguments (trusted expressions only).
    pub fn invocation(&self, nix_instantiate: &Program) -> Invocation {
        self.append_to(Invocation::new(nix_instantiate))
    }
}

/// `ip -json addr show`: every interface with its addresses, as JSON (iproute2 `ip(8)`:
/// `-json` is a global option and goes before the object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpAddrShow;

impl IpAddrShow {
    pub fn argv(&self) -> Vec<OsString> {
        vec!["-json".into(), "addr".into(), "show".into()]
    }
}

/// An LVM report as JSON with sizes in bytes (lvm `vgs(8)` / `lvs(8)`: `--reportformat
/// json`, `--units b --nosuffix`, `-o <fields>`). The program (`vgs` or `lvs`) decides
/// what is reported; `fields` which columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmReport {
    pub fields: Vec<String>,
    /// Report only these (a VG for `vgs`/`lvs`); empty: everything.
    pub targets: Vec<String>,
}

impl LvmReport {
    /// What the agent's storage inventory reads from `vgs`.
    pub fn volume_groups() -> LvmReport {
        LvmReport::fields("vg_name,vg_size,vg_free,pv_count,lv_count")
    }

    /// What the agent's storage inventory reads from `lvs`.
    pub fn logical_volumes() -> LvmReport {
        LvmReport::fields("lv_name,vg_name,lv_size,lv_attr,pool_lv,data_percent")
    }

    pub fn fields(fields: &str) -> LvmReport {
        LvmReport {
            fields: fields.split(',').map(|f| f.trim().to_string()).collect(),
            targets: Vec::new(),
        }
    }

    /// Report only `target` (a volume group).
    pub fn of(mut self, target: &str) -> LvmReport {
        self.targets.push(target.to_string());
        self
    }

    pub fn argv(&self) -> Vec<OsString> {
        vec![
            "--reportformat".into(),
            "json".into(),
            "--units".into(),
            "b".into(),
            "--nosuffix".into(),
            "-o".into(),
            self.fields.join(",").into(),
        ]
        .into_iter()
        .chain(self.targets.iter().map(OsString::from))
        .collect()
    }
}

/// `zpool list -H -p -o name,size,alloc,free,health`: one tab-separated line per pool,
/// exact numbers (`zpool-list(8)`: `-H` scripted mode, `-p` parsable values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZpoolList;

impl ZpoolList {
    pub fn argv(&self) -> Vec<OsString> {
        ["list", "-H", "-p", "-o", "name,size,alloc,free,health"]
            .map(OsString::from)
            .to_vec()
    }
}

/// `zpool status POOL`: the pool's health and its devices, as text (`zpool-status(8)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZpoolStatus {
    pub pool: String,
}

impl ZpoolStatus {
    pub fn argv(&self) -> Vec<OsString> {
        vec!["status".into(), "--".into(), self.pool.as_str().into()]
    }
}

/// `zpool status -P`: every imported pool with its devices as full paths (`-P`), what
/// the install's plan reads to tell an imported pool's members from an exported one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZpoolStatusAll;

impl ZpoolStatusAll {
    pub fn argv(&self) -> Vec<OsString> {
        vec!["status".into(), "-P".into()]
    }

    /// The device paths (`/dev/...`) in the output, one per vdev line.
    pub fn device_paths(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.starts_with("/dev/"))
            .map(str::to_string)
            .collect()
    }
}

/// `zfs list -H -p -r -o name,used,avail,mountpoint POOL`: the pool's datasets, recursively
/// (`zfs-list(8)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsList {
    pub pool: String,
}

impl ZfsList {
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> =
            ["list", "-H", "-p", "-r", "-o", "name,used,avail,mountpoint"]
                .map(OsString::from)
                .to_vec();
        // `--` so a pool name can never be read as an option.
        argv.push("--".into());
        argv.push(self.pool.as_str().into());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(argv: Vec<OsString>) -> Vec<String> {
        argv.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn inventory_reads_spell_their_flags_once() {
        assert_eq!(strings(IpAddrShow.argv()), ["-json", "addr", "show"]);
        assert_eq!(
            strings(LvmReport::volume_groups().argv()),
            [
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "vg_name,vg_size,vg_free,pv_count,lv_count"
            ]
        );
        assert_eq!(
            strings(LvmReport::logical_volumes().argv())
                .last()
                .map(String::as_str),
            Some("lv_name,vg_name,lv_size,lv_attr,pool_lv,data_percent")
        );
        assert_eq!(
            strings(LvmReport::fields("vg_free").of("vg0").argv())[5..],
            ["-o", "vg_free", "vg0"]
        );
        assert_eq!(
            strings(ZpoolList.argv()),
            ["list", "-H", "-p", "-o", "name,size,alloc,free,health"]
        );
        assert_eq!(
            strings(
                ZpoolStatus {
                    pool: "tank".into()
                }
                .argv()
            ),
            ["status", "--", "tank"]
        );
        assert_eq!(strings(ZpoolStatusAll.argv()), ["status", "-P"]);
        let status = "  pool: tank0\n state: ONLINE\nconfig:\n\n\tNAME STATE READ WRITE CKSUM\n\ttank0 ONLINE 0 0 0\n\t  /dev/disk/by-id/ata-X-part1 ONLINE 0 0 0\n\t  /dev/sdd1 ONLINE 0 0 0\n\nerrors: No known data errors\n";
        assert_eq!(
            ZpoolStatusAll::device_paths(status),
            ["/dev/disk/by-id/ata-X-part1", "/dev/sdd1"]
        );
        assert_eq!(
            strings(
                ZfsList {
                    pool: "-tank".into()
                }
                .argv()
            ),
            [
                "list",
                "-H",
                "-p",
                "-r",
                "-o",
                "name,used,avail,mountpoint",
                "--",
                "-tank"
            ]
        );
    }

    #[test]
    fn lsblk_argv_is_json_in_bytes_with_the_columns_joined() {
        let lsblk = Lsblk::columns("NAME, KNAME,,SIZE");
        assert_eq!(lsblk.columns, ["NAME", "KNAME", "SIZE"]);
        assert_eq!(
            strings(lsblk.argv()),
            ["--json", "--bytes", "--output", "NAME,KNAME,SIZE"]
        );
    }

    #[test]
    fn show_trace_is_one_flag_after_the_arguments() {
        let argv = strings(NixEval::expr("1").show_trace().argv());
        assert_eq!(argv.last().map(String::as_str), Some("--show-trace"));
        assert!(!strings(NixEval::expr("1").argv()).contains(&"--show-trace".to_string()));
    }

    #[test]
    fn nix_eval_argv_keeps_the_expression_and_each_value_whole() {
        let eval = NixEval::expr("{ fragment }: import fragment")
            .argstr("fragment", "/tmp/a b.nix")
            .argstr("nixpkgsLib", "/nix/store/x-lib");
        assert_eq!(
            strings(eval.argv()),
            [
                "--eval",
                "--strict",
                "--json",
                "--expr",
                "{ fragment }: import fragment",
                "--argstr",
                "fragment",
                "/tmp/a b.nix",
                "--argstr",
                "nixpkgsLib",
                "/nix/store/x-lib",
            ]
        );
        let sh = Program::resolve("sh", None, "KCORE_TEST_UNSET_SH").unwrap();
        let argv = eval.invocation(&sh).arg("extra").argv();
        assert_eq!(argv[0], sh.path().to_string_lossy());
        assert_eq!(argv[1..6], strings(eval.argv())[..5]);
        assert_eq!(argv.last().map(String::as_str), Some("extra"));
    }
}
