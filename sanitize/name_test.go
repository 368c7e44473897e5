package sanitize

import (
	"strings"
	"testing"
)

// TestSecretName is the decision table of the deny-by-default name rule.
// Every borderline name is here with the reason for its decision; change a
// decision only together with docs/security.md.
func TestSecretName(t *testing.T) {
	cases := []struct {
		name   string
		secret bool
		why    string
	}{
		// Caught: the secret words themselves.
		{"password", true, "secret word"},
		{"PASSWORD", true, "case-insensitive"},
		{"passwd", true, "secret word"},
		{"passphrase", true, "secret word"},
		{"pwd", true, "secret word (even though $PWD is a directory: deny by default)"},
		{"secret", true, "secret word"},
		{"secrets", true, "plural"},
		{"token", true, "secret word"},
		{"tokens", true, "plural"},
		{"credential", true, "secret word"},
		{"credentials", true, "plural"},
		{"jwt", true, "a JWT is a bearer credential"},
		{"bearer", true, "bearer credential"},
		{"cookie", true, "a cookie carries a session credential"},
		{"Set-Cookie", true, "header name: set, cookie"},
		{"session", true, "decision: a session identifier is a bearer credential"},
		{"session_id", true, "decision: as above"},
		{"sessionId", true, "camelCase"},
		{"sessionid", true, "concatenation ending in sessionid"},
		{"JSESSIONID", true, "concatenation ending in sessionid"},
		{"Authorization", true, "decision: an Authorization header value is the credential"},
		{"Proxy-Authorization", true, "as above"},

		// Caught: whole words in longer names.
		{"webhook_secret", true, "word secret"},
		{"callback_token", true, "word token"},
		{"user.password", true, "'.' separates"},
		{"db password", true, "space separates"},
		{"x-auth-token", true, "'-' separates"},
		{"api:token", true, "any non-alphanumeric byte separates"},
		{"client_secret", true, "word secret (and the pair client+secret)"},
		{"clientSecret", true, "camelCase"},
		{"oauth2Token", true, "letter/digit boundary: oauth 2 token"},
		{"password_hash", true, "word password"},

		// Caught: concatenations.
		{"apikey", true, "concatenation"},
		{"APIKEY", true, "concatenation, upper case"},
		{"privatekey", true, "concatenation"},
		{"jitconfig", true, "concatenation"},
		{"jitconfiguration", true, "concatenation"},
		{"accesstoken", true, "ends with token"},
		{"githubToken", true, "camelCase"},
		{"refreshtoken", true, "ends with token"},
		{"dbpassword", true, "ends with password"},
		{"webhooksecret", true, "ends with secret"},
		{"githubapikey", true, "ends with apikey"},
		{"sshkeys", true, "ends with sshkey(s)"},
		{"passwordhash", true, "begins with password"},
		{"passwdfile", true, "begins with passwd"},

		// Caught: pairs.
		{"api_key", true, "api + key"},
		{"apiKey", true, "camelCase: api key"},
		{"X-API-Key", true, "header: x api key"},
		{"APIKey", true, "upper run then Key: api key"},
		{"api_keys", true, "api + keys"},
		{"private_key", true, "private + key"},
		{"privateKeyPEM", true, "private key pem"},
		{"private_ssh_key", true, "pair need not be adjacent"},
		{"secret_key", true, "secret word (and secret + key)"},
		{"signing_key", true, "signing + key"},
		{"access_key", true, "access + key"},
		{"access_key_id", true, "decision: deny by default, though an access key id alone is not the secret"},
		{"encryption_key", true, "encryption + key"},
		{"ssh_key", true, "ssh + key"},
		{"ssh_key_fingerprint", true, "decision: caught (fingerprints are public: allow explicitly)"},
		{"hmac_key", true, "hmac + key"},
		{"master_key", true, "master + key"},
		{"auth_key", true, "auth + key"},
		{"client_key", true, "client + key (a TLS client key)"},
		{"tls_key", true, "tls + key"},
		{"jit_config", true, "jit + config"},
		{"JITConfig", true, "upper run then Config: jit config"},
		{"jit_configuration", true, "jit + configuration"},
		{"encodedJitConfig", true, "encoded jit config"},

		// Caught, though harmless: deny by default, allow explicitly.
		{"token_count", true, "decision: word token; allow with changecast:\"public\" if harmless"},
		{"token_fetched", true, "word token: the built-in Instance allows it explicitly"},
		{"credentials_id", true, "word credentials: the built-in repository/organization/enterprise allow it explicitly"},
		{"tokens_used", true, "word tokens"},

		// Not caught: whole words only, and names that do not say secret.
		{"tokenizer", false, "whole words only; token is not a prefix"},
		{"secretary", false, "whole words only; secret is not a prefix"},
		{"secretion", false, "as above"},
		{"passenger", false, "pass is not a secret word"},
		{"pass", false, "decision: 'pass' also means a passing check in CI"},
		{"passed", false, "as above"},
		{"keyboard", false, "not the word key"},
		{"monkey", false, "key is only secret with a qualifier"},
		{"key", false, "decision: a bare key names key/value pairs and lookup keys"},
		{"primary_key", false, "primary is not a key qualifier"},
		{"sort_key", false, "as above"},
		{"idempotency_key", false, "as above"},
		{"public_key", false, "a public key is public"},
		{"api_base_url", false, "api without key"},
		{"private", false, "a private-repository flag; private without key"},
		{"auth_type", false, "auth alone says which kind of credential, not the credential"},
		{"author", false, "not auth"},
		{"authority", false, "not authorization"},
		{"github_runner_group", false, "no secret word"},
		{"callback_url", false, "no secret word"},
		{"metadata_url", false, "no secret word"},
		{"ca_cert_bundle", false, "certificates are public"},
		{"certificate", false, "certificates are public"},
		{"config", false, "config without jit"},
		{"jit", false, "jit without config"},
		{"configuration", false, "as above"},
		{"possession", false, "session is not a suffix"},
		{"pallbearer", false, "bearer is not a suffix"},
		{"dsn", false, "decision: not caught; a DSN's password is inside a text value (not covered)"},
		{"notes", false, "harmless name (not covered: mark such columns)"},
		{"id", false, "no secret word"},
		{"", false, "empty"},
		{"___", false, "separators only"},
		{"t\u00f8ken", false, "non-ASCII letters separate and never fold: t, ken"},
		{"\u212aey_api", false, "KELVIN SIGN is not K: ASCII folding only"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := SecretName(c.name); got != c.secret {
				t.Fatalf("SecretName(%q) = %v, want %v (%s)", c.name, got, c.secret, c.why)
			}
			if got := secretName([]byte(c.name)); got != c.secret {
				t.Fatalf("secretName([]byte(%q)) = %v, want %v", c.name, got, c.secret)
			}
		})
	}
}

func TestSecretName_LongWords(t *testing.T) {
	long := strings.Repeat("a", 200)
	if !SecretName(long + "token") {
		t.Fatalf("a 205-byte word ending in token: got false, want true")
	}
	if SecretName(long) {
		t.Fatalf("a 200-byte harmless word: got true, want false")
	}
}

func TestSecretName_NoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	names := []string{"pool_balancer_type", "privateKeyPEM", "token_fetched", "extra_specs"}
	allocs := testing.AllocsPerRun(100, func() {
		for _, n := range names {
			SecretName(n)
		}
	})
	if allocs != 0 {
		t.Fatalf("SecretName allocates %v times per run, want 0", allocs)
	}
}
