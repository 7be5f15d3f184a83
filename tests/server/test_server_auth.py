"""Who may use the server: the bearer token, the page's login, and no cross-site writes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

TOKEN = "correct horse battery staple"


@pytest.fixture
def guarded(make_app):
    with TestClient(make_app(token=TOKEN), follow_redirects=False) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health"),
        ("GET", "/info"),
        ("POST", "/search"),
        ("POST", "/ask"),
        ("GET", "/documents"),
        ("GET", "/openapi.json"),
        ("GET", "/static/app.js"),
    ],
)
def test_every_route_needs_the_token(guarded, method, path):
    response = guarded.request(method, path, json={"query": "revenue", "question": "revenue?"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_bearer_token_opens_the_api(guarded):
    response = guarded.post(
        "/search", json={"query": "revenue"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert response.status_code == 200


def test_a_wrong_token_is_refused(guarded):
    response = guarded.get("/health", headers={"Authorization": "Bearer guess"})

    assert response.status_code == 401


def test_without_a_token_the_page_shows_the_login_form(guarded):
    response = guarded.get("/")

    assert response.status_code == 401
    assert '<form method="post" action="/login">' in response.text


def test_the_token_in_the_address_logs_the_browser_in_and_leaves_the_address(guarded):
    login = guarded.get("/", params={"token": TOKEN})

    assert login.status_code == 303 and login.headers["location"] == "/"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    assert guarded.get("/").status_code == 200  # the client keeps the cookie
    assert guarded.post("/search", json={"query": "revenue"}).status_code == 200


def test_the_login_form_logs_the_browser_in(guarded):
    response = guarded.post("/login", data={"token": TOKEN})

    assert response.status_code == 303
    assert guarded.get("/info").status_code == 200


def test_a_wrong_token_in_the_login_form_is_refused(guarded):
    response = guarded.post("/login", data={"token": "guess"})

    assert response.status_code == 401
    assert "not this server" in response.text
    assert guarded.get("/info").status_code == 401


def test_without_a_token_every_route_is_open(client):
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 200


def test_a_write_from_another_site_is_refused(client):
    response = client.post(
        "/search", json={"query": "revenue"}, headers={"Origin": "http://evil.example"}
    )

    assert response.status_code == 403


def test_a_write_from_the_page_itself_is_allowed(client):
    response = client.post(
        "/search", json={"query": "revenue"}, headers={"Origin": "http://testserver"}
    )

    assert response.status_code == 200


def test_a_host_header_not_allowed_is_refused(make_app):
    app = make_app(allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://rebound.example") as client:
        assert client.get("/health").status_code == 400
