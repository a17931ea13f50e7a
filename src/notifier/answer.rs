//! The notifier's answers: an [`Ack`] on the alert's ResponseTopic, with
//! its CorrelationData, at QoS 1.

use rumqttc::{AsyncClient, PublishNoticeError, PublishOptions, QoS};
use tokio::task::JoinHandle;

use crate::mqtt::payload::{self, Ack};
use crate::notifier::core::Reply;
use crate::sys::shutdown::Shutdown;
use crate::sys::timefmt;

/// Sends answers as `by` (the notifier's client id).
pub struct Answerer {
    pub client: AsyncClient,
    pub by: String,
    pub tasks: Shutdown,
}

impl Answerer {
    /// Publishes the answer to an alert on its ResponseTopic; the task
    /// that waits for its confirmation is returned.
    pub async fn send(
        &self,
        alert_id: &str,
        reply: Reply,
        status: &'static str,
    ) -> Option<JoinHandle<()>> {
        let ack = Ack {
            alert_id: alert_id.to_string(),
            status: status.into(),
            by: self.by.clone(),
            ts: timefmt::now_rfc3339(),
        };
        let props = rumqttc::PublishProperties {
            correlation_data: reply.correlation,
            ..payload::json_properties(None)
        };
        let body = payload::encode(&ack);
        let opts = PublishOptions::new(QoS::AtLeastOnce).properties(props.clone());
        let response_topic = reply.topic;
        match self
            .client
            .publish_tracked(response_topic.clone(), body.clone(), opts)
            .await
        {
            Ok(notice) => {
                let client = self.client.clone();
                let id = alert_id.to_string();
                Some(self.tasks.spawn(async move {
                    match notice.wait_async().await {
                        Ok(_) => {}
                        Err(PublishNoticeError::BrokerOnlySessionResume) => {
                            // No local packet-id state for this resumed
                            // session: answer at QoS 0 rather than not at all.
                            let opts = PublishOptions::new(QoS::AtMostOnce).properties(props);
                            if let Err(e) = client.publish(response_topic, body, opts).await {
                                log::error!("cannot answer alert {id}: {e}");
                            }
                        }
                        Err(e) => log::warn!("answer to alert {id} not confirmed: {e}"),
                    }
                }))
            }
            Err(e) => {
                log::error!("cannot answer alert {alert_id}: {e}");
                None
            }
        }
    }
}
