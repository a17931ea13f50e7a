//! `thermalertd`'s command line: the [`Cli`], [`main`] (logging, config,
//! then the command), `check-config` and `scan`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::run::run;
use crate::config::{self, Config};
use crate::mqtt::conn::endpoint;
use crate::sensor;
use crate::sys::logging::chain;

#[derive(Debug, Parser)]
#[command(
    name = "thermalertd",
    version,
    about = "DS18B20 temperature alert gateway: MQTT v5 over TLS"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and exit (0 when valid, 78 when not).
    CheckConfig,
    /// List every sensor the configured backend finds.
    Scan,
    /// Fire drill: publish a TEST alert through the broker, print who
    /// answered and how fast; exit 1 when nobody answered in time.
    Drill {
        /// Seconds to wait for answers.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Stop as soon as this many notifiers answered.
        #[arg(long)]
        expect: Option<usize>,
    },
}

/// The daemon's entry point; returns the process exit code.
pub fn main() -> i32 {
    crate::sys::logging::init();
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            // Several problems: one line each.
            for line in e.to_string().lines() {
                log::error!("invalid configuration: {line}");
            }
            return crate::EXIT_CONFIG;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => check_config(&cfg, &cli.config),
        Command::Scan => scan(&cfg),
        Command::Drill { timeout, expect } => {
            crate::daemon::drill::main(&cfg, &cli.config, Duration::from_secs(timeout), expect)
        }
        Command::Run => {
            let endpoint = match endpoint(&cfg) {
                Ok(e) => e,
                Err(e) => {
                    log::error!(
                        "invalid configuration: {}: {}",
                        cli.config.display(),
                        chain(&e)
                    );
                    return crate::EXIT_CONFIG;
                }
            };
            // One thread: the outbox's per-sweep fsync runs on the blocking
            // pool, so the MQTT link does not wait for it (BENCHMARKS.md);
            // only the log's occasional compaction (every few dozen
            // alerts) still syncs here.
            let Some(rt) = crate::mqtt::oneshot::runtime() else {
                return 1;
            };
            match rt.block_on(run(cfg, endpoint, &cli.config)) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{}", chain(&e));
                    1
                }
            }
        }
    }
}

fn check_config(cfg: &Config, path: &std::path::Path) -> i32 {
    if let Err(e) = endpoint(cfg) {
        log::error!("invalid configuration: {}: {}", path.display(), chain(&e));
        return crate::EXIT_CONFIG;
    }
    println!(
        "{}: OK: gateway {}, broker {}:{}, {} sensor(s), backend {:?}",
        path.display(),
        cfg.gateway_id,
        cfg.mqtt.host,
        cfg.mqtt.port,
        cfg.sensor.len(),
        cfg.sensors.backend
    );
    0
}

fn scan(cfg: &Config) -> i32 {
    let mut backend = match sensor::open(&cfg.sensors, &cfg.sensor) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("scan failed: {e}");
            return 1;
        }
    };
    let found = match backend.scan() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("scan failed: {e}");
            return 1;
        }
    };
    if found.is_empty() {
        eprintln!("scan: no sensors found on the bus");
        return 1;
    }
    println!(
        "{:<18} {:<15} {:>10} {:>5} {:<9} CONFIGURED",
        "ROM ID", "FAMILY", "CELSIUS", "BITS", "POWER"
    );
    for f in &found {
        let configured = cfg.sensor.iter().find(|s| s.id == f.id);
        println!(
            "{:<18} {:<15} {:>10} {:>5} {:<9} {}",
            f.id,
            f.family.unwrap_or("?"),
            match &f.celsius {
                Ok(c) => format!("{c:.3}"),
                Err(e) => format!("({e})"),
            },
            f.resolution_bits.map_or("?".into(), |b| b.to_string()),
            match f.parasite {
                Some(true) => "parasite",
                Some(false) => "external",
                None => "?",
            },
            configured.map_or("no".to_string(), |s| format!("yes ({})", s.display_name()))
        );
    }
    0
}
