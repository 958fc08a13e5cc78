//! The one classifier of requests by method and path, used by the concurrency budgets
//! (`http::budgets`), the request-duration metric and the access log.

use axum::http::Method;

/// What kind of work a request is. A bounded set: its names are metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Client requests: object redirects, the discovery document, any other path. Cheap
    /// and in memory.
    Redirect,
    /// Services registering ads, operators sending records (and any other POST to the API).
    Register,
    /// Ads (or offers of ads) forwarded by peer directors.
    Forward,
    /// A peer fetching ads by key (catch-up): reads a body, answers ads.
    Fetch,
    /// Answers that grow with the view: ad and server listings, digests, directors,
    /// namespaces, the status page and its JSON, metrics.
    Bulk,
    /// Liveness and readiness: constant cost, never shed.
    Control,
}

/// The discovery document: the one client request with a route of its own.
pub const DISCOVERY: &str = "/.well-known/pelican-configuration";

/// Label values, in declaration order.
pub const ROUTE_CLASSES: [&str; 6] = [
    "redirect", "register", "forward", "fetch", "bulk", "control",
];

/// What a class draws on: each budget is a separate limit on requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    /// Client redirects.
    Redirect,
    /// Requests that read a body.
    Ingest,
    /// Listings, digests, metrics, the status page.
    Bulk,
}

impl RouteClass {
    /// Classifies a request by its method and path.
    pub fn of(method: &Method, path: &str) -> Self {
        const DIRECTOR_API: &str = "/api/v1.0/director/";
        match path {
            "/health" | "/ready" | "/api/v1.0/health" => return RouteClass::Control,
            "/" | "/metrics" => return RouteClass::Bulk,
            "/api/v1.0/director/forward" | "/api/v1.0/director/forward/offer" => {
                return RouteClass::Forward;
            }
            "/api/v1.0/director/ads/fetch" => return RouteClass::Fetch,
            _ => {}
        }
        if *method == Method::POST && path.starts_with("/api/") {
            return RouteClass::Register;
        }
        if let Some(endpoint) = path.strip_prefix(DIRECTOR_API) {
            // Object and origin paths are redirects, whatever the object is called.
            if endpoint.starts_with("object/") || endpoint.starts_with("origin/") {
                return RouteClass::Redirect;
            }
            return RouteClass::Bulk;
        }
        if path.starts_with("/api/") && path.contains("/listNamespaces") {
            return RouteClass::Bulk;
        }
        RouteClass::Redirect
    }

    /// True for work that grows with the view or with a body of many ads (forwarded
    /// batches, catch-up fetches, listings, the status page): a director runs it away
    /// from the threads that serve redirects (`http::serve`). A registration carries one
    /// ad, and liveness checks cost nothing: they run where they arrive.
    pub fn runs_apart(self) -> bool {
        matches!(
            self,
            RouteClass::Forward | RouteClass::Fetch | RouteClass::Bulk
        )
    }

    /// True if the router has no route for `path`, so it would send the request to its
    /// fallback, the object handler: every client request but the discovery document.
    /// (Requests of other classes may reach the fallback too; this only never says yes
    /// to a routed path, which `http::dispatch`'s tests check against every route.)
    pub fn is_unrouted(method: &Method, path: &str) -> bool {
        Self::of(method, path) == RouteClass::Redirect && path != DISCOVERY
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        ROUTE_CLASSES[self as usize]
    }

    /// The budget this class draws on; `None` for requests never shed.
    pub fn budget(self) -> Option<Budget> {
        match self {
            RouteClass::Redirect => Some(Budget::Redirect),
            RouteClass::Register | RouteClass::Forward | RouteClass::Fetch => Some(Budget::Ingest),
            RouteClass::Bulk => Some(Budget::Bulk),
            RouteClass::Control => None,
        }
    }
}

impl Budget {
    /// A short lowercase name (for the 503's detail).
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Redirect => "redirect",
            Budget::Ingest => "ingest",
            Budget::Bulk => "bulk",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_work_a_request_does() {
        let get = Method::GET;
        let post = Method::POST;
        for (method, path, class) in [
            (&get, "/test/hello.txt", RouteClass::Redirect),
            (
                &get,
                "/api/v1.0/director/object/test/x",
                RouteClass::Redirect,
            ),
            (
                &Method::PUT,
                "/api/v1.0/director/origin/test/x",
                RouteClass::Redirect,
            ),
            (&get, DISCOVERY, RouteClass::Redirect),
            // A POST to an object path is a client request (refused later as a method).
            (&post, "/test/x", RouteClass::Redirect),
            (
                &post,
                "/api/v1.0/director/registerOrigin",
                RouteClass::Register,
            ),
            (
                &post,
                "/api/v1.0/director/registerCache",
                RouteClass::Register,
            ),
            (&post, "/api/v1.0/director/records", RouteClass::Register),
            (&post, "/api/v1.0/director/forward", RouteClass::Forward),
            (
                &post,
                "/api/v1.0/director/forward/offer",
                RouteClass::Forward,
            ),
            (&post, "/api/v1.0/director/ads/fetch", RouteClass::Fetch),
            (&get, "/api/v1.0/director/ads", RouteClass::Bulk),
            (&get, "/api/v1.0/director/servers", RouteClass::Bulk),
            (&get, "/api/v1.0/director/digest", RouteClass::Bulk),
            (&get, "/api/v1.0/director/directors", RouteClass::Bulk),
            (&get, "/api/v1.0/director/status", RouteClass::Bulk),
            (&get, "/api/v2.0/director/listNamespaces", RouteClass::Bulk),
            (&get, "/metrics", RouteClass::Bulk),
            (&get, "/", RouteClass::Bulk),
            (&get, "/health", RouteClass::Control),
            (&get, "/ready", RouteClass::Control),
            (&get, "/api/v1.0/health", RouteClass::Control),
        ] {
            assert_eq!(RouteClass::of(method, path), class, "{method} {path}");
        }
    }

    #[test]
    fn bodies_draw_on_ingest_and_control_is_never_shed() {
        for class in [RouteClass::Register, RouteClass::Forward, RouteClass::Fetch] {
            assert_eq!(class.budget(), Some(Budget::Ingest));
        }
        assert_eq!(RouteClass::Control.budget(), None);
        assert_eq!(RouteClass::Fetch.as_str(), "fetch");
        assert_eq!(RouteClass::Control.as_str(), "control");
    }
}
