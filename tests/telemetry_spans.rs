//! The `tracing` spans of `coord::telemetry`: acquire, release, campaign, resign and observe
//! carry the name, key, fencing token and revision; each backend call has a debug span. Recorded
//! by a per-thread subscriber on a current-thread runtime, on coord-mem.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex as StdMutex};

use coord::mem::MemStore;
use coord::{Election, Mutex, Session};
use futures::StreamExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One span: its name, level and fields (as text).
#[derive(Clone, Debug)]
struct Seen {
    name: &'static str,
    level: Level,
    fields: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Spans(Arc<StdMutex<Vec<(Id, Seen)>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let meta = attrs.metadata();
        let seen = Seen {
            name: meta.name(),
            level: *meta.level(),
            fields,
        };
        self.0.lock().unwrap().push((id.clone(), seen));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, seen)) = spans.iter_mut().rev().find(|(i, _)| i == id) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<Seen> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

fn field<'a>(span: &'a Seen, name: &str) -> &'a str {
    span.fields
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("span {} has no field {name}: {:?}", span.name, span.fields))
}

#[tokio::test(start_paused = true)]
async fn primitive_and_backend_spans_carry_their_fields() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let store = MemStore::new();
    let session = Session::new(store.clone(), 10).await.unwrap();

    let guard = Mutex::new(&session, "jobs").unwrap().lock().await.unwrap();
    let (key, token, revision) = (
        String::from_utf8(guard.key().to_vec()).unwrap(),
        guard.fencing_token(),
        guard.revision(),
    );
    guard.unlock().await.unwrap();
    for op in ["coord.acquire", "coord.release"] {
        let found = spans.named(op);
        assert_eq!(found.len(), 1, "{op}");
        let span = &found[0];
        assert_eq!(span.level, Level::INFO);
        assert_eq!(field(span, "primitive"), "mutex");
        assert_eq!(field(span, "name"), "jobs");
        assert_eq!(field(span, "key"), key);
        assert_eq!(field(span, "token"), token.to_string());
        assert_eq!(field(span, "revision"), revision.to_string());
    }

    let election = Election::new(&session, "svc").unwrap();
    let mut leaders = election.observe();
    leaders.next().await.unwrap().unwrap();
    let leadership = election.campaign("me").await.unwrap();
    let term = leadership.rev();
    leadership.resign().await.unwrap();
    for op in ["coord.campaign", "coord.resign"] {
        let found = spans.named(op);
        assert_eq!(found.len(), 1, "{op}");
        assert_eq!(field(&found[0], "primitive"), "election");
        assert_eq!(field(&found[0], "name"), "svc");
        assert_eq!(field(&found[0], "token"), term.to_string());
    }
    assert_eq!(field(&spans.named("coord.observe")[0], "name"), "svc");

    // One debug span per backend call: lock, unlock, campaign and resign are a txn each.
    let backend = spans.named("coord.backend");
    assert!(backend.iter().all(|s| s.level == Level::DEBUG));
    let txns = backend.iter().filter(|s| field(s, "op") == "txn").count();
    assert_eq!(txns, 4, "{backend:?}");
    assert!(backend.iter().any(|s| field(s, "op") == "lease_grant"));
    drop(leaders);
    session.close().await.unwrap();
}
