//! The gateway daemon; everything lives in [`thermalert::daemon`].

fn main() {
    std::process::exit(thermalert::daemon::main());
}
