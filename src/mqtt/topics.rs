//! Topic names: `<prefix>/<gateway>/status`, `.../sensors/<sensor>/reading`,
//! `.../alerts/<sensor>`, `.../acks`.

/// The topics of one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(prefix: &str, gateway: &str) -> Self {
        Self {
            base: format!("{prefix}/{gateway}"),
        }
    }

    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    pub fn reading(&self, sensor: &str) -> String {
        format!("{}/sensors/{sensor}/reading", self.base)
    }

    pub fn alert(&self, sensor: &str) -> String {
        format!("{}/alerts/{sensor}", self.base)
    }

    pub fn acks(&self) -> String {
        format!("{}/acks", self.base)
    }
}

/// Subscription filter for every gateway's alerts.
pub fn all_alerts(prefix: &str) -> String {
    format!("{prefix}/+/alerts/+")
}

/// Subscription filter for every gateway's status.
pub fn all_statuses(prefix: &str) -> String {
    format!("{prefix}/+/status")
}

/// Subscription filter for every gateway's readings.
pub fn all_readings(prefix: &str) -> String {
    format!("{prefix}/+/sensors/+/reading")
}

/// Subscription filter for every gateway's answers.
pub fn all_acks(prefix: &str) -> String {
    format!("{prefix}/+/acks")
}

/// What a topic received by the notifier is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    Status { gateway: &'a str },
    Alert { gateway: &'a str, sensor: &'a str },
    Reading { gateway: &'a str, sensor: &'a str },
    Acks { gateway: &'a str },
    Other,
}

/// Splits a topic under `prefix` into what it carries.
pub fn parse<'a>(prefix: &str, topic: &'a str) -> Parsed<'a> {
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Parsed::Other;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [gateway, "status"] => Parsed::Status { gateway },
        [gateway, "alerts", sensor] => Parsed::Alert { gateway, sensor },
        [gateway, "sensors", sensor, "reading"] => Parsed::Reading { gateway, sensor },
        [gateway, "acks"] => Parsed::Acks { gateway },
        _ => Parsed::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parsing_agree() {
        let t = Topics::new("thermalert", "gw1");
        assert_eq!(t.status(), "thermalert/gw1/status");
        assert_eq!(t.alert("28-1"), "thermalert/gw1/alerts/28-1");
        assert_eq!(t.reading("28-1"), "thermalert/gw1/sensors/28-1/reading");
        assert_eq!(t.acks(), "thermalert/gw1/acks");
        assert_eq!(
            parse("thermalert", &t.alert("28-1")),
            Parsed::Alert {
                gateway: "gw1",
                sensor: "28-1"
            }
        );
        assert_eq!(
            parse("thermalert", &t.status()),
            Parsed::Status { gateway: "gw1" }
        );
        assert_eq!(
            parse("thermalert", &t.acks()),
            Parsed::Acks { gateway: "gw1" }
        );
        assert_eq!(
            parse("thermalert", &t.reading("28-1")),
            Parsed::Reading {
                gateway: "gw1",
                sensor: "28-1"
            }
        );
        assert_eq!(parse("thermalert", "thermalertx/gw1/status"), Parsed::Other);
    }
}
