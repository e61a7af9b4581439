//! Email, the second delivery channel: an `email` subscription renders a message from the event
//! and sends it over SMTP, on the same queue with the same retries as webhooks.
//!
//! Templates substitute `{{path}}` with a value from the event JSON (`{{event}}`,
//! `{{payload.object.topic}}`, `{{payload.object.host_email}}` …); `{{event_time}}` is the event's
//! time in RFC 3339 and `{{body}}` the event, pretty-printed. Recipients are a comma-separated
//! template too, so "the host of the meeting" is `{{payload.object.host_email}}`.

use lettre::message::{Mailbox, Message, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::Value;

use crate::store::deliveries::{Claimed, Subscription};

pub const DEFAULT_SUBJECT: &str = "[zoomhook] {{event}}";
pub const DEFAULT_BODY: &str = "{{event}} at {{event_time}}\n\n{{body}}\n";

/// An SMTP connection factory and the sender address.
#[derive(Clone)]
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl EmailSender {
    /// From `smtp://host:port`, `smtp://user:pass@host:587?tls=required` or `smtps://…`.
    pub fn new(url: &str, from: &str) -> Result<EmailSender, String> {
        // The URL may hold the SMTP password: the error (shown at start-up and in logs) must not.
        let scrubber = super::redact::Scrubber::new([url], []);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| scrubber.scrub(&format!("invalid SMTP URL: {e}")))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("invalid sender address {from:?}: {e}"))?;
        Ok(EmailSender { transport, from })
    }

    /// Renders and sends the message for one delivery.
    pub async fn send(&self, sub: &Subscription, claimed: &Claimed) -> Result<(), String> {
        let event: Value = serde_json::from_slice(&claimed.body)
            .map_err(|e| format!("the event body is not JSON: {e}"))?;
        let to = render(sub.email_to.as_deref().unwrap_or_default(), &event, claimed);
        let subject = render(
            sub.email_subject.as_deref().unwrap_or(DEFAULT_SUBJECT),
            &event,
            claimed,
        );
        let body = render(
            sub.email_body.as_deref().unwrap_or(DEFAULT_BODY),
            &event,
            claimed,
        );
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject.replace(['\r', '\n'], " "))
            .header(ContentType::TEXT_PLAIN);
        let mut recipients = 0;
        for address in to.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let mailbox: Mailbox = address
                .parse()
                .map_err(|e| format!("invalid recipient {address:?}: {e}"))?;
            builder = builder.to(mailbox);
            recipients += 1;
        }
        if recipients == 0 {
            return Err(format!(
                "no recipient: {:?} rendered empty for this event",
                sub.email_to
            ));
        }
        let message = builder
            .body(body)
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// Substitutes `{{path}}` placeholders; unknown paths render empty.
pub fn render(template: &str, event: &Value, claimed: &Claimed) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&value_at(after[..end].trim(), event, claimed));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn value_at(path: &str, event: &Value, claimed: &Claimed) -> String {
    match path {
        "body" => serde_json::to_string_pretty(event).unwrap_or_default(),
        "event_time" => claimed
            .event_ts
            .map(crate::core::clock::rfc3339)
            .unwrap_or_default(),
        "event_id" => claimed.delivery.event_id.clone(),
        _ => {
            let found = path.split('.').try_fold(event, |v, key| v.get(key));
            match found {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            }
        }
    }
}
