package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/sasl/oauth"
)

// tokenSource fetches OAUTHBEARER tokens with the OAuth 2.0 client
// credentials grant (RFC 6749 §4.4), what TiCDC's sasl-oauth-* settings
// configure: client id and secret as HTTP Basic credentials (§2.3.1),
// scope space-separated, audience as an extra form field. A token is
// reused until shortly before it expires, so a burst of new broker
// connections asks the token endpoint once.
type tokenSource struct {
	cfg    SASLConfig
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

// tokenSlack is how long before its expiry a token is no longer handed out:
// a connection authenticating with it must still be inside its lifetime
// when the broker checks it.
const tokenSlack = 30 * time.Second

func newTokenSource(cfg SASLConfig, client *http.Client) *tokenSource {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	return &tokenSource{cfg: cfg, client: client, now: time.Now}
}

// auth is the franz-go token callback; kgo calls it for every SASL session.
func (ts *tokenSource) auth(ctx context.Context) (oauth.Auth, error) {
	tok, err := ts.get(ctx)
	if err != nil {
		return oauth.Auth{}, err
	}
	return oauth.Auth{Token: tok}, nil
}

func (ts *tokenSource) get(ctx context.Context) (string, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.token != "" && ts.now().Before(ts.expires) {
		return ts.token, nil
	}
	tok, ttl, err := ts.fetch(ctx)
	if err != nil {
		return "", err
	}
	ts.token, ts.expires = tok, ts.now().Add(ttl-tokenSlack)
	return tok, nil
}

// TokenError is a failed token request to sasl-oauth-token-url. A 4xx
// status (bad client id or secret, unknown scope) is Fatal; anything else
// (5xx, network) Retryable.
type TokenError struct {
	URL        string
	StatusCode int // 0 when no response arrived
	Body       string
	Err        error
}

func (e *TokenError) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("kafka: OAUTHBEARER token request to %s failed: %v", e.URL, e.Err)
	}
	return fmt.Sprintf("kafka: OAUTHBEARER token request to %s: HTTP %d: %s", e.URL, e.StatusCode, e.Body)
}

func (e *TokenError) Unwrap() error { return e.Err }

func (ts *tokenSource) fetch(ctx context.Context) (string, time.Duration, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(ts.cfg.OAuthScopes) > 0 {
		form.Set("scope", strings.Join(ts.cfg.OAuthScopes, " "))
	}
	if ts.cfg.OAuthAudience != "" {
		form.Set("audience", ts.cfg.OAuthAudience)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.cfg.OAuthTokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, &TokenError{URL: ts.cfg.OAuthTokenURL, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: both parts form-encoded before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(ts.cfg.OAuthClientID), url.QueryEscape(ts.cfg.OAuthClientSecret))
	resp, err := ts.client.Do(req)
	if err != nil {
		return "", 0, &TokenError{URL: ts.cfg.OAuthTokenURL, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, &TokenError{URL: ts.cfg.OAuthTokenURL, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		return "", 0, &TokenError{URL: ts.cfg.OAuthTokenURL, StatusCode: resp.StatusCode, Body: truncate(string(body), 256)}
	}
	var tr struct {
		AccessToken string      `json:"access_token"`
		TokenType   string      `json:"token_type"`
		ExpiresIn   json.Number `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", 0, &TokenError{URL: ts.cfg.OAuthTokenURL, StatusCode: resp.StatusCode, Body: truncate(string(body), 256), Err: err}
	}
	if tr.AccessToken == "" {
		return "", 0, &TokenError{URL: ts.cfg.OAuthTokenURL, StatusCode: resp.StatusCode, Body: "response has no access_token"}
	}
	// No expires_in: use the token for this session only.
	ttl := time.Duration(0)
	if secs, err := tr.ExpiresIn.Int64(); err == nil && secs > 0 {
		ttl = time.Duration(secs) * time.Second
	}
	return tr.AccessToken, ttl, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
