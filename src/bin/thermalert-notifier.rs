//! The workstation notifier; everything lives in [`thermalert::notifier`].

fn main() {
    std::process::exit(thermalert::notifier::main());
}
