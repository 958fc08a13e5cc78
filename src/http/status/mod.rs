//! The status page an operator keeps open (`GET /`) and its data as JSON.

mod human;
mod page;
mod view;

use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use view::{
    DirectorStatus, ErrorText, HealthCell, PeerRow, ServerRow, StatusView, server_rows,
};

use super::AppState;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(page))
        .route("/api/v1.0/director/status", get(json))
}

/// The status page's HTML for `view`.
pub fn render(view: &StatusView) -> String {
    page::render(view).into_string()
}

async fn page(State(state): State<Arc<AppState>>) -> Response {
    Html(render(&StatusView::gather(&state))).into_response()
}

async fn json(State(state): State<Arc<AppState>>) -> Json<StatusView> {
    Json(StatusView::gather(&state))
}
