from tests.web.session import login

HTML = {"Accept": "text/html"}


def test_browser_gets_an_error_page_for_a_forbidden_page(client, engineer):
    login(client, engineer.user.username)
    r = client.get("/admin/users", headers=HTML)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("text/html")
    assert "Not allowed" in r.text and "admin role" in r.text
    # Still signed in: the page keeps the navigation and says who.
    assert 'aria-label="Main"' in r.text and engineer.user.username in r.text
    assert 'href="/admin/users"' not in r.text


def test_api_clients_keep_json_errors(client, engineer):
    r = client.get("/api/v1/datasets/999", headers={**engineer.headers, **HTML})
    assert r.status_code == 404
    assert r.json() == {"detail": "dataset 999 not found"}
