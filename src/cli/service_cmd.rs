//! `claude-relay service install|uninstall|status`: run the hub as a service of the user's
//! service manager — a launchd LaunchAgent on macOS, a systemd user unit elsewhere — so it
//! comes back after crashes and logins, running this very binary with the flags given.
//!
//! - **install** writes the definition ([`units`]) and loads it: launchd
//!   (`~/Library/LaunchAgents/com.claude-relay.hub.plist`, logs in
//!   `~/Library/Logs/claude-relay/`, `launchctl bootstrap gui/UID`), systemd
//!   (`~/.config/systemd/user/claude-relay-hub.service`, `systemctl --user daemon-reload`,
//!   `enable --now`; logs in the journal). Running it again is safe: the file is rewritten
//!   only when it differs, and a hub already running is restarted, so after upgrading the
//!   binary `service install` puts the new one to work.
//! - **uninstall** stops the service and removes its file; when there is nothing to remove
//!   it says so and succeeds. Logs are kept.
//! - **status** says whether the service is installed, loaded, running, and whether the hub
//!   answers a `ping` at the address (and with the token file) it was installed with.
//! - `--dry-run` prints exactly what would be written (the whole file) and run, and changes
//!   nothing. The hidden `--system launchd|systemd` renders the other system's service (tests
//!   on Linux check the plist that way).
//!
//! Every command we run is bounded in time ([`super::external`]).

mod units;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use mcp_bridge::dial::ClientAuth;
use relay_proto::wire::DEFAULT_PORT;

use super::{
    external::{self, shell_line},
    hub_ping::{self, Ping},
    user_files::{Home, write_user_file},
};
use units::{HubService, LAUNCHD_LABEL, SYSTEMD_UNIT};

/// How long one `systemctl` / `launchctl` call may take (a restart waits for the hub's
/// clean shutdown).
const MANAGER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long launchd may keep refusing a `bootstrap` right after a `bootout` (it unloads
/// asynchronously), and how often to retry within that.
const BOOTSTRAP_RETRY_FOR: Duration = Duration::from_secs(5);
const BOOTSTRAP_RETRY_EVERY: Duration = Duration::from_millis(250);

/// Arguments of `claude-relay service`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceArgs {
    #[command(subcommand)]
    action: ServiceAction,
}

#[derive(Debug, clap::Subcommand)]
enum ServiceAction {
    /// Install the hub as a service (launchd on macOS, systemd --user on Linux) and start it,
    /// or update it and restart it on this binary. Safe to run again.
    Install(InstallArgs),
    /// Stop the hub service and remove its definition (logs are kept). Safe to run again.
    Uninstall {
        /// Print what would be removed and run; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Is the hub service installed, loaded, running, and does the hub answer?
    Status(StatusArgs),
}

/// A service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum System {
    /// launchd (macOS): a LaunchAgent in ~/Library/LaunchAgents.
    Launchd,
    /// systemd: a user unit in ~/.config/systemd/user.
    Systemd,
}

/// Which service manager to use.
#[derive(Debug, Clone, clap::Args)]
struct Target {
    /// The service manager [default: launchd on macOS, systemd elsewhere].
    #[arg(long, value_enum, hide = true)]
    system: Option<System>,
}

impl Target {
    fn system(&self) -> System {
        self.system.unwrap_or(if cfg!(target_os = "macos") {
            System::Launchd
        } else {
            System::Systemd
        })
    }
}

/// Arguments of `claude-relay service install`: where and how the service's hub runs (the
/// same flags as `claude-relay hub`).
#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// Print the file that would be written and the commands that would run; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
    /// Port for the hub.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address for the hub. Keep loopback unless the hub has a token (--token-file).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Directory of the hub's store [default: the hub's, ~/.claude-relay/hub].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// File holding the hub token (keep it mode 0600).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificate chain: serve wss:// (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Let the hub listen on a non-loopback address without a token (see `hub --help`).
    #[arg(long)]
    insecure: bool,
}

/// Arguments of `claude-relay service status`.
#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Ping the hub at this URL instead of the address the service was installed with.
    #[arg(long, value_name = "URL")]
    relay_url: Option<String>,
    /// PEM certificate of the CA that signed a wss:// hub's certificate (else RELAY_CA_CERT,
    /// else the system's roots).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

/// Runs `claude-relay service`.
pub(super) fn run(args: ServiceArgs) -> anyhow::Result<ExitCode> {
    let home = Home::current()?;
    match args.action {
        ServiceAction::Install(a) => {
            let place = Place::new(a.target.system(), &home);
            install(&place, &a)
        }
        ServiceAction::Uninstall { dry_run, target } => {
            uninstall(&Place::new(target.system(), &home), dry_run)
        }
        ServiceAction::Status(a) => status(&Place::new(a.target.system(), &home), &a),
    }
}

/// Where a service lives on this machine.
struct Place {
    system: System,
    home: Home,
    /// The plist or unit file.
    file: PathBuf,
    /// launchd's domain for this user, `gui/UID`.
    domain: String,
}

impl Place {
    fn new(system: System, home: &Home) -> Self {
        let file = match system {
            System::Launchd => home.launch_agents().join(format!("{LAUNCHD_LABEL}.plist")),
            System::Systemd => home.systemd_user_units().join(SYSTEMD_UNIT),
        };
        let domain = match system {
            System::Launchd => format!("gui/{}", uid()),
            System::Systemd => String::new(),
        };
        Self {
            system,
            home: home.clone(),
            file,
            domain,
        }
    }

    /// launchd's name for the loaded agent, `gui/UID/com.claude-relay.hub`.
    fn service_target(&self) -> String {
        format!("{}/{LAUNCHD_LABEL}", self.domain)
    }

    fn systemctl(&self, args: &[&str]) -> Vec<String> {
        argv("systemctl", &[&["--user"], args].concat())
    }

    fn launchctl(&self, args: &[&str]) -> Vec<String> {
        argv("launchctl", args)
    }

    /// Whether launchd has the agent loaded (`launchctl print` succeeds). Read-only, so a
    /// dry run asks too; `false` where there is no launchctl.
    fn launchd_loaded(&self) -> bool {
        external::run(
            &self.launchctl(&["print", &self.service_target()]),
            MANAGER_TIMEOUT,
        )
        .is_ok_and(|o| o.success())
    }

    /// The installed file's text, `None` when there is none.
    fn installed(&self) -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(&self.file) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.file.display())),
        }
    }
}

fn argv(program: &str, args: &[&str]) -> Vec<String> {
    std::iter::once(program)
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

/// This user's id, for launchd's `gui/UID` domain (`id -u`; `$(id -u)` if that fails).
fn uid() -> String {
    external::run(&argv("id", &["-u"]), Duration::from_secs(5))
        .ok()
        .filter(external::Output::success)
        .map(|o| o.stdout.trim().to_string())
        .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| "$(id -u)".into())
}

// ---------------------------------------------------------------------------------------
// Steps

/// One thing install or uninstall does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Create a directory (and its parents) if missing.
    Mkdir(PathBuf),
    /// Write a file (creating its directory), replacing it atomically.
    Write(PathBuf, String),
    /// Delete a file.
    Remove(PathBuf),
    /// Run a command; failing stops the rest.
    Run(Vec<String>),
    /// Run a command, retrying for a few seconds while it fails.
    RunRetrying(Vec<String>),
}

impl Step {
    /// What a dry run prints for this step: a file to be written in full, between marker
    /// lines, so it can be saved or compared as is.
    fn describe(&self) -> String {
        match self {
            Step::Mkdir(d) => format!("create directory {}\n", d.display()),
            Step::Write(p, text) => format!(
                "write {path}:\n--- begin {path} ---\n{text}--- end {path} ---\n",
                path = p.display()
            ),
            Step::Remove(p) => format!("remove {}\n", p.display()),
            Step::Run(a) | Step::RunRetrying(a) => format!("run: {}\n", shell_line(a)),
        }
    }

    fn apply(&self) -> anyhow::Result<()> {
        match self {
            Step::Mkdir(d) => std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create {}", d.display()))?,
            Step::Write(p, text) => write_user_file(p, text.as_bytes())?,
            Step::Remove(p) => match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", p.display()));
                }
                _ => {}
            },
            Step::Run(a) => run_checked(a)?,
            Step::RunRetrying(a) => {
                let deadline = std::time::Instant::now() + BOOTSTRAP_RETRY_FOR;
                loop {
                    match run_checked(a) {
                        Ok(()) => break,
                        Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                        Err(_) => std::thread::sleep(BOOTSTRAP_RETRY_EVERY),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs a command and fails with what it printed unless it exits 0.
fn run_checked(a: &[String]) -> anyhow::Result<()> {
    let line = shell_line(a);
    let out = external::run(a, MANAGER_TIMEOUT).with_context(|| format!("cannot run {line}"))?;
    if !out.success() {
        bail!(
            "`{line}` failed (exit {}): {}",
            out.code.map_or("by signal".into(), |c| c.to_string()),
            out.first_line()
        );
    }
    Ok(())
}

/// Prints (dry run) or performs `steps`.
fn perform(steps: &[Step], dry_run: bool, what: &str) -> anyhow::Result<()> {
    if dry_run {
        println!("--dry-run: nothing was written or run. `claude-relay service {what}` would:");
        for s in steps {
            print!("{}", s.describe());
        }
        return Ok(());
    }
    for s in steps {
        s.apply()?;
        match s {
            Step::Write(p, _) => println!("wrote {}", p.display()),
            Step::Mkdir(_) => {}
            other => print!("{}", other.describe().replacen("run: ", "ran: ", 1)),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// install

/// What `service install` does, given what is there now: the installed file's text
/// (`None`: not installed) and, for launchd, whether the agent is loaded.
fn install_steps(
    place: &Place,
    log_dir: &Path,
    new: &str,
    existing: Option<&str>,
    loaded: bool,
) -> Vec<Step> {
    let changed = existing != Some(new);
    let mut steps = Vec::new();
    match place.system {
        System::Systemd => {
            if changed {
                steps.push(Step::Write(place.file.clone(), new.to_string()));
            }
            steps.push(Step::Run(place.systemctl(&["daemon-reload"])));
            if existing.is_none() {
                steps.push(Step::Run(place.systemctl(&[
                    "enable",
                    "--now",
                    SYSTEMD_UNIT,
                ])));
            } else {
                // Already installed: make sure it is enabled, and restart it so it runs this
                // binary and these flags (restart also starts a stopped unit).
                steps.push(Step::Run(place.systemctl(&["enable", SYSTEMD_UNIT])));
                steps.push(Step::Run(place.systemctl(&["restart", SYSTEMD_UNIT])));
            }
        }
        System::Launchd => {
            steps.push(Step::Mkdir(log_dir.to_path_buf()));
            if changed {
                steps.push(Step::Write(place.file.clone(), new.to_string()));
            }
            let target = place.service_target();
            let file = place.file.to_string_lossy();
            let bootstrap = place.launchctl(&["bootstrap", &place.domain, &file]);
            match (loaded, changed) {
                // Same definition, already loaded: restart it on the current binary.
                (true, false) => {
                    steps.push(Step::Run(place.launchctl(&["kickstart", "-k", &target])))
                }
                // A new definition replaces the loaded one.
                (true, true) => {
                    steps.push(Step::Run(place.launchctl(&["bootout", &target])));
                    steps.push(Step::Run(place.launchctl(&["enable", &target])));
                    steps.push(Step::RunRetrying(bootstrap));
                }
                (false, _) => {
                    steps.push(Step::Run(place.launchctl(&["enable", &target])));
                    steps.push(Step::Run(bootstrap));
                }
            }
        }
    }
    steps
}

fn install(place: &Place, a: &InstallArgs) -> anyhow::Result<ExitCode> {
    let service = hub_service(place, a)?;
    let text = match place.system {
        System::Launchd => units::plist(&service),
        System::Systemd => units::systemd_unit(&service),
    };
    let existing = place.installed()?;
    let loaded = place.system == System::Launchd && place.launchd_loaded();
    let steps = install_steps(place, &service.log_dir, &text, existing.as_deref(), loaded);
    if existing.as_deref() == Some(text.as_str()) && !a.dry_run {
        println!("{} is up to date", place.file.display());
    }
    perform(&steps, a.dry_run, "install")?;
    if a.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let logs = match place.system {
        System::Launchd => format!("logs in {}", place.home.show(&service.log_dir)),
        System::Systemd => "logs: journalctl --user -u claude-relay-hub -f".to_string(),
    };
    println!(
        "The hub runs as a service of {} on {}; {logs}. Check it with: claude-relay service status",
        match place.system {
            System::Launchd => "launchd",
            System::Systemd => "systemd --user",
        },
        service.argv[0]
    );
    Ok(ExitCode::SUCCESS)
}

/// The service for these arguments: this binary (absolute), `hub` and the flags, every path
/// made absolute (a service does not start in the directory `install` ran in).
fn hub_service(place: &Place, a: &InstallArgs) -> anyhow::Result<HubService> {
    if !a.host.is_loopback() && a.token_file.is_none() && !a.insecure {
        bail!(
            "refusing to install a hub that listens on {} without a token: anyone who can reach \
             the port could read every session's mail. Give --token-file FILE, keep the default \
             127.0.0.1 and reach it over SSH, or pass --insecure if you really mean it",
            a.host
        );
    }
    let exe = std::env::current_exe().context("cannot find the path of this binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    if exe.components().any(|c| c.as_os_str() == "target") {
        eprintln!(
            "note: the service will run {} from a build directory; a rebuild or `cargo clean` \
             changes it. `cargo install --locked --path .` and installing from there is sturdier.",
            exe.display()
        );
    }
    let mut argv = vec![
        utf8(&exe, "this binary")?,
        "hub".into(),
        "--host".into(),
        a.host.to_string(),
        "--port".into(),
        a.port.to_string(),
    ];
    if let Some(dir) = &a.data_dir {
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot make {} absolute", dir.display()))?;
        argv.extend(["--data-dir".into(), utf8(&dir, "--data-dir")?]);
    }
    for (flag, file) in [
        ("--token-file", &a.token_file),
        ("--tls-cert", &a.tls_cert),
        ("--tls-key", &a.tls_key),
    ] {
        if let Some(file) = file {
            // The hub reads these at start: a missing one would make the service crash-loop.
            let abs = file
                .canonicalize()
                .with_context(|| format!("{flag} {}", file.display()))?;
            argv.extend([flag.to_string(), utf8(&abs, flag)?]);
        }
    }
    if a.insecure {
        argv.push("--insecure".into());
    }
    let relay_home = std::env::var(relay_local::paths::HOME_ENV)
        .ok()
        .filter(|v| !v.is_empty());
    for word in argv.iter().chain(&relay_home) {
        if word.chars().any(char::is_control) {
            bail!("{word:?} contains a control character; a service file cannot carry it");
        }
    }
    Ok(HubService {
        argv,
        relay_home,
        log_dir: place.home.launchd_logs(),
    })
}

fn utf8(p: &Path, what: &str) -> anyhow::Result<String> {
    p.to_str().map(String::from).with_context(|| {
        format!(
            "the path of {what} ({}) is not UTF-8; a service file cannot carry it",
            p.display()
        )
    })
}

// ---------------------------------------------------------------------------------------
// uninstall

/// What `service uninstall` does, given whether the file exists and (launchd) whether the
/// agent is loaded.
fn uninstall_steps(place: &Place, installed: bool, loaded: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    match place.system {
        System::Systemd if installed => {
            steps.push(Step::Run(place.systemctl(&[
                "disable",
                "--now",
                SYSTEMD_UNIT,
            ])));
            steps.push(Step::Remove(place.file.clone()));
            steps.push(Step::Run(place.systemctl(&["daemon-reload"])));
        }
        System::Systemd => {}
        System::Launchd => {
            if loaded {
                steps.push(Step::Run(
                    place.launchctl(&["bootout", &place.service_target()]),
                ));
            }
            if installed {
                steps.push(Step::Remove(place.file.clone()));
            }
        }
    }
    steps
}

fn uninstall(place: &Place, dry_run: bool) -> anyhow::Result<ExitCode> {
    let installed = place.installed()?.is_some();
    let loaded = place.system == System::Launchd && place.launchd_loaded();
    let steps = uninstall_steps(place, installed, loaded);
    if steps.is_empty() {
        println!(
            "The hub service is not installed ({} does not exist); nothing to do.",
            place.home.show(&place.file)
        );
        return Ok(ExitCode::SUCCESS);
    }
    perform(&steps, dry_run, "uninstall")?;
    if !dry_run {
        println!("The hub service is removed (its store and logs are kept).");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// status

/// What the service manager says about the service.
#[derive(Debug, Default, PartialEq, Eq)]
struct ManagerView {
    loaded: Option<bool>,
    running: Option<bool>,
    pid: Option<u32>,
    /// Extra words for the "loaded" line (enabled?), or why nothing is known.
    note: String,
}

/// Reads `systemctl --user show -p LoadState,ActiveState,SubState,MainPID,UnitFileState`.
fn systemd_view(show: &str) -> ManagerView {
    let get = |k: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
            .unwrap_or("")
    };
    ManagerView {
        loaded: Some(get("LoadState") == "loaded"),
        running: Some(get("ActiveState") == "active" && get("SubState") == "running"),
        pid: get("MainPID").parse().ok().filter(|p| *p != 0),
        note: match get("UnitFileState") {
            "" => String::new(),
            s => s.to_string(),
        },
    }
}

/// Reads `launchctl print gui/UID/LABEL` (`state = running`, `pid = N`).
fn launchd_view(print: &str) -> ManagerView {
    let get = |k: &str| {
        print
            .lines()
            .find_map(|l| l.trim().strip_prefix(k)?.trim_start().strip_prefix('='))
            .map(str::trim)
    };
    ManagerView {
        loaded: Some(true),
        running: Some(get("state") == Some("running")),
        pid: get("pid").and_then(|p| p.parse().ok()),
        note: String::new(),
    }
}

/// The URL and token file the service's hub was installed with (from its command line).
fn hub_address(argv: &[String]) -> (String, Option<PathBuf>) {
    let value = |flag: &str| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
    };
    let port = value("--port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(DEFAULT_PORT);
    let host = match value("--host").and_then(|h| h.parse::<IpAddr>().ok()) {
        // A hub on every address is reached here on loopback.
        Some(ip) if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        Some(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        Some(IpAddr::V6(ip)) => format!("[{ip}]"),
        Some(ip) => ip.to_string(),
        None => "127.0.0.1".to_string(),
    };
    let scheme = if value("--tls-cert").is_some() {
        "wss"
    } else {
        "ws"
    };
    (
        format!("{scheme}://{host}:{port}"),
        value("--token-file").map(PathBuf::from),
    )
}

fn status(place: &Place, a: &StatusArgs) -> anyhow::Result<ExitCode> {
    let installed = place.installed()?;
    let hub_argv = installed.as_deref().and_then(|t| match place.system {
        System::Launchd => units::plist_argv(t),
        System::Systemd => units::systemd_argv(t),
    });
    let kind = match place.system {
        System::Launchd => "launchd agent",
        System::Systemd => "systemd user unit",
    };
    let shown = place.home.show(&place.file);
    println!(
        "installed: {} ({kind} {shown})",
        if installed.is_some() { "yes" } else { "no" }
    );

    let view = match place.system {
        System::Systemd => {
            let show = place.systemctl(&[
                "show",
                SYSTEMD_UNIT,
                "--property=LoadState,ActiveState,SubState,MainPID,UnitFileState",
            ]);
            match external::run(&show, MANAGER_TIMEOUT) {
                Ok(o) if o.success() => systemd_view(&o.stdout),
                Ok(o) => ManagerView {
                    note: format!("systemctl --user: {}", o.first_line()),
                    ..ManagerView::default()
                },
                Err(e) => ManagerView {
                    note: format!("cannot run systemctl: {e}"),
                    ..ManagerView::default()
                },
            }
        }
        System::Launchd => {
            let print = place.launchctl(&["print", &place.service_target()]);
            match external::run(&print, MANAGER_TIMEOUT) {
                Ok(o) if o.success() => launchd_view(&o.stdout),
                Ok(_) => ManagerView {
                    loaded: Some(false),
                    running: Some(false),
                    ..ManagerView::default()
                },
                Err(e) => ManagerView {
                    note: format!("cannot run launchctl: {e}"),
                    ..ManagerView::default()
                },
            }
        }
    };
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let note = if view.note.is_empty() {
        String::new()
    } else {
        format!(" ({})", view.note)
    };
    println!("loaded:    {}{note}", yes_no(view.loaded));
    let pid = view.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    println!("running:   {}{pid}", yes_no(view.running));

    let (installed_url, token_file) = hub_address(hub_argv.as_deref().unwrap_or_default());
    let url = a.relay_url.clone().unwrap_or(installed_url);
    let auth = ClientAuth::resolve(token_file.as_deref(), a.ca_cert.as_deref(), |k| {
        std::env::var(k).ok()
    });
    let reachable = match hub_ping::ping(&url, &auth)? {
        Ping::Answered { version } => {
            let v = version.map(|v| format!(" (hub {v})")).unwrap_or_default();
            println!("reachable: yes — {url} answered{v}");
            true
        }
        Ping::Token(why) | Ping::Tls(why) | Ping::Unreachable(why) | Ping::Other(why) => {
            println!("reachable: no — {why}");
            false
        }
    };
    let healthy =
        installed.is_some() && view.loaded == Some(true) && view.running == Some(true) && reachable;
    if installed.is_none() {
        println!("Install it with: claude-relay service install");
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(system: System) -> Place {
        let home = Home::at("/home/me");
        Place {
            system,
            file: match system {
                System::Launchd => home.launch_agents().join("com.claude-relay.hub.plist"),
                System::Systemd => {
                    PathBuf::from("/home/me/.config/systemd/user").join(SYSTEMD_UNIT)
                }
            },
            home,
            domain: "gui/501".into(),
        }
    }

    fn runs(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Run(a) | Step::RunRetrying(a) => Some(shell_line(a)),
                _ => None,
            })
            .collect()
    }

    fn writes(steps: &[Step]) -> usize {
        steps
            .iter()
            .filter(|s| matches!(s, Step::Write(..)))
            .count()
    }

    #[test]
    fn systemd_install_then_reinstall() {
        let p = place(System::Systemd);
        let logs = Path::new("/unused");
        let fresh = install_steps(&p, logs, "unit", None, false);
        assert_eq!(writes(&fresh), 1);
        assert_eq!(
            runs(&fresh),
            [
                "systemctl --user daemon-reload",
                "systemctl --user enable --now claude-relay-hub.service"
            ]
        );
        let again = install_steps(&p, logs, "unit", Some("unit"), false);
        assert_eq!(writes(&again), 0, "an unchanged file is not rewritten");
        assert_eq!(
            runs(&again),
            [
                "systemctl --user daemon-reload",
                "systemctl --user enable claude-relay-hub.service",
                "systemctl --user restart claude-relay-hub.service"
            ]
        );
        assert_eq!(
            writes(&install_steps(&p, logs, "new", Some("old"), false)),
            1
        );
    }

    #[test]
    fn launchd_install_by_state() {
        let p = place(System::Launchd);
        let logs = Path::new("/home/me/Library/Logs/claude-relay");
        let fresh = install_steps(&p, logs, "plist", None, false);
        assert_eq!(fresh[0], Step::Mkdir(logs.to_path_buf()));
        assert_eq!(writes(&fresh), 1);
        assert_eq!(
            runs(&fresh),
            [
                "launchctl enable gui/501/com.claude-relay.hub",
                "launchctl bootstrap gui/501 /home/me/Library/LaunchAgents/com.claude-relay.hub.plist"
            ]
        );
        let same = install_steps(&p, logs, "plist", Some("plist"), true);
        assert_eq!(writes(&same), 0);
        assert_eq!(
            runs(&same),
            ["launchctl kickstart -k gui/501/com.claude-relay.hub"]
        );
        let changed = install_steps(&p, logs, "new", Some("old"), true);
        assert_eq!(
            runs(&changed)[0],
            "launchctl bootout gui/501/com.claude-relay.hub"
        );
        assert!(matches!(changed.last(), Some(Step::RunRetrying(_))));
    }

    #[test]
    fn uninstall_is_idempotent() {
        let s = place(System::Systemd);
        assert_eq!(
            runs(&uninstall_steps(&s, true, false)),
            [
                "systemctl --user disable --now claude-relay-hub.service",
                "systemctl --user daemon-reload"
            ]
        );
        assert!(uninstall_steps(&s, false, false).is_empty());
        let l = place(System::Launchd);
        assert_eq!(uninstall_steps(&l, true, true).len(), 2);
        assert!(uninstall_steps(&l, false, false).is_empty());
    }

    #[test]
    fn manager_views() {
        let v = systemd_view(
            "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4242\nUnitFileState=enabled\n",
        );
        assert_eq!(
            v,
            ManagerView {
                loaded: Some(true),
                running: Some(true),
                pid: Some(4242),
                note: "enabled".into()
            }
        );
        let v =
            systemd_view("LoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\n");
        assert_eq!(
            (v.loaded, v.running, v.pid),
            (Some(false), Some(false), None)
        );
        let v = launchd_view("gui/501/com.claude-relay.hub = {\n\tstate = running\n\tpid = 77\n}");
        assert_eq!((v.running, v.pid), (Some(true), Some(77)));
    }

    #[test]
    fn address_from_the_installed_command_line() {
        let a = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            hub_address(&a(&[
                "/bin/claude-relay",
                "hub",
                "--host",
                "0.0.0.0",
                "--port",
                "4000",
                "--token-file",
                "/t",
                "--tls-cert",
                "/c",
                "--tls-key",
                "/k"
            ])),
            (
                "wss://127.0.0.1:4000".to_string(),
                Some(PathBuf::from("/t"))
            )
        );
        assert_eq!(hub_address(&[]), ("ws://127.0.0.1:9999".to_string(), None));
        assert_eq!(
            hub_address(&a(&["x", "hub", "--host", "::1", "--port", "1"])).0,
            "ws://[::1]:1"
        );
    }
}
