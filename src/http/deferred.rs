//! Answers finished after the middleware has returned: how a held
//! heartbeat (docs/api.md, "Waiting heartbeat") waits without keeping the
//! whole request stack alive.
//!
//! Why: a request in progress is a chain of futures, one per middleware
//! layer and one for the handler with its extractors, each boxed at the
//! size of its largest state. For a request answered in microseconds that
//! does not matter; for ten thousand heartbeats held for 25 s it was most
//! of what holding cost (about 9 KB each, measured with a counting
//! allocator). So a handler that must wait returns a placeholder carrying
//! the waiting future ([`respond`]); each middleware that acts on the
//! answer on its way out registers that work with [`then`] instead of
//! doing it on the placeholder; and the outermost layer ([`finish`]) awaits
//! the waiting future with those steps. While the answer is held only the
//! waiting future and the outermost layer's are alive.
//!
//! A layer that inspects the answer must go through [`then`]; a layer that
//! does not know about deferred answers would see the placeholder (an
//! empty 200 that never reaches a client), which is why every layer of the
//! application is listed in `http::app` and each is covered here.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::Response;
use axum::middleware::Next;
use futures_util::FutureExt;

type Answer = Response<Body>;
type Waiting = Pin<Box<dyn Future<Output = Answer> + Send>>;
/// One layer's work on the final answer; its future is made only when the
/// answer is finished, so while it waits a step costs just its captures.
type Step = Box<dyn FnOnce(Answer) -> Waiting + Send>;

/// A held answer: the future that finishes it, then the layers' steps,
/// innermost first.
struct Held {
    waiting: Waiting,
    steps: Vec<Step>,
}

/// Carried in the placeholder's extensions, which must be `Clone + Sync`,
/// hence the shared slot (taken once, by [`finish`]).
#[derive(Clone)]
struct Deferred(Arc<Mutex<Option<Held>>>);

impl Deferred {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a step, or gives it back if the answer was taken already.
    fn push(&self, step: Step) -> Result<(), Step> {
        match self.slot().as_mut() {
            Some(held) => {
                held.steps.push(step);
                Ok(())
            }
            None => Err(step),
        }
    }
}

/// A placeholder answer that `waiting` finishes.
pub fn respond(waiting: impl Future<Output = Answer> + Send + 'static) -> Answer {
    let held = Held {
        waiting: Box::pin(waiting),
        steps: Vec::new(),
    };
    let mut placeholder = Response::new(Body::empty());
    placeholder
        .extensions_mut()
        .insert(Deferred(Arc::new(Mutex::new(Some(held)))));
    placeholder
}

/// Runs `step` on the final answer: now, or when a deferred answer is
/// finished. Every layer's work on an answer goes through here.
pub async fn then<F, Fut>(response: Answer, step: F) -> Answer
where
    F: FnOnce(Answer) -> Fut + Send + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let Some(deferred) = response.extensions().get::<Deferred>().cloned() else {
        return step(response).await;
    };
    match deferred.push(Box::new(move |answer| Box::pin(step(answer)))) {
        Ok(()) => response,
        // Already finished (not by this application's layers): run it now.
        Err(step) => step(response).await,
    }
}

/// The outermost layer: finishes a deferred answer once every inner layer
/// (and its future) is done. A panic while held is answered like a
/// handler's (a 500), and the steps still run on it.
pub async fn finish(request: Request, next: Next) -> Answer {
    // Boxed so that the inner layers' futures are freed, not kept inline
    // in this one, while the answer is held.
    let response = Box::pin(next.run(request)).await;
    let Some(held) = response
        .extensions()
        .get::<Deferred>()
        .and_then(|d| d.slot().take())
    else {
        return response;
    };
    drop(response);
    let mut answer = caught(held.waiting).await;
    for step in held.steps {
        answer = caught(step(answer)).await;
    }
    answer
}

async fn caught(future: Waiting) -> Answer {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .unwrap_or_else(super::panic_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn tagged(request: Request, next: Next) -> Answer {
        let response = next.run(request).await;
        then(response, |mut r| async move {
            r.headers_mut().insert("x-seen", "1".parse().unwrap());
            r
        })
        .await
    }

    fn app(handler: fn() -> Answer) -> Router {
        Router::new()
            .route("/", get(move || async move { handler() }))
            .layer(axum::middleware::from_fn(tagged))
            .layer(axum::middleware::from_fn(finish))
    }

    async fn call(app: Router) -> Answer {
        app.oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_deferred_answer_is_finished_with_every_layers_step() {
        let answer = call(app(|| {
            respond(async {
                tokio::task::yield_now().await;
                Response::builder().status(409).body(Body::empty()).unwrap()
            })
        }))
        .await;
        assert_eq!(answer.status(), 409);
        assert_eq!(answer.headers()["x-seen"], "1");
        assert!(answer.extensions().get::<Deferred>().is_none());
        assert!(answer.extensions().get::<Deferred>().is_none());
    }

    #[tokio::test]
    async fn an_answer_at_once_gets_the_same_steps() {
        let answer = call(app(|| Response::new(Body::empty()))).await;
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["x-seen"], "1");
    }

    #[tokio::test]
    async fn a_panic_while_held_is_a_500() {
        let answer = call(app(|| respond(async { panic!("held and broken") }))).await;
        assert_eq!(answer.status(), 500);
        assert_eq!(answer.headers()["x-seen"], "1");
    }
}
