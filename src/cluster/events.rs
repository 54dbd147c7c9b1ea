//! Publishing Kubernetes Events through a recorder renewed every two minutes.

use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};

use crate::cluster::Result;

/// How long one recorder (and the Events it remembers) is used.
const EVENT_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

/// Publishes Events. kube's `Recorder` remembers each Event it published, to count a repeat
/// within six minutes as a series of the first, in a table that never shrinks: after a fleet's
/// first wave it would keep room for thousands of Events (about 1.4 KiB each) for good. A
/// fresh recorder every two minutes keeps only the current window: a repeat within it is still
/// counted on the first Event, and the table of a busy window is freed with it.
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
    current: Mutex<(Instant, Recorder)>,
}

impl Events {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Self {
            client,
            reporter,
            current: Mutex::new((Instant::now(), recorder)),
        }
    }

    pub async fn publish(&self, event: &Event, reference: &ObjectReference) -> Result<()> {
        let recorder = {
            let mut current = self
                .current
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if current.0.elapsed() >= EVENT_WINDOW {
                *current = (
                    Instant::now(),
                    Recorder::new(self.client.clone(), self.reporter.clone()),
                );
            }
            current.1.clone()
        };
        recorder.publish(event, reference).await?;
        Ok(())
    }
}
