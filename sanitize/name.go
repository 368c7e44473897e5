package sanitize

// The name rule (deny by default). A column or JSON key is secret by name
// when, split into lowercase words, it matches one of these rules; the
// decisions for borderline names are tabled in name_test.go.
//
// Splitting: every byte that is not an ASCII letter or digit separates
// words ("_", "-", ".", " ", ":", "/", non-ASCII, ...); so do camelCase
// boundaries ("apiKey" → api key; "JITConfig" → jit config;
// "privateKeyPEM" → private key pem) and letter/digit boundaries
// ("oauth2Token" → oauth 2 token). Letters are lowered in ASCII only, so a
// non-ASCII look-alike never folds into a secret word (and every word is a
// contiguous ASCII substring of the name, which stripJSON's pre-scan relies
// on).

// wordKind is what one lowercase word means to the name rule.
type wordKind uint8

const (
	wordPlain     wordKind = iota
	wordSecret             // secret on its own
	wordKey                // "key", "keys": secret with a key qualifier
	wordQualifier          // makes "key" secret
	wordJit                // secret with "config"
	wordConfig             // secret with "jit"
)

// kindOf classifies a lowercase word; a switch on string(w) does not
// allocate.
func kindOf(w []byte) wordKind {
	switch string(w) {
	case "password", "passwords", "passwd", "passphrase", "passphrases", "pwd",
		"secret", "secrets",
		"token", "tokens",
		"credential", "credentials",
		"jwt", "jwts", "bearer",
		// A cookie or session identifier is a bearer credential.
		"cookie", "cookies", "session", "sessions",
		// An HTTP Authorization header value carries the credential itself.
		"authorization":
		return wordSecret
	case "key", "keys":
		return wordKey
	case "api", "private", "signing", "access", "encryption", "ssh",
		"hmac", "master", "auth", "client", "tls":
		// The key qualifiers ("secret" is one too, but is secret alone):
		// "key" is secret with one of them, as a separate word
		// ("api_key", "privateKey", "ssh_key_path") or concatenated
		// (suffixesByLast). A bare "key" (key/value tables,
		// "primary_key", "sort_key") is not secret.
		return wordQualifier
	case "jit":
		return wordJit
	case "config", "configuration":
		return wordConfig
	}
	return wordPlain
}

// keyQualifiers are the qualifiers of kindOf, for the concatenations.
var keyQualifiers = []string{
	"api", "private", "secret", "signing", "access", "encryption", "ssh",
	"hmac", "master", "auth", "client", "tls",
}

// secretSuffixes are secret as a word's ending too, which catches
// concatenations ("accesstoken", "dbpassword", "webhooksecret",
// "jitconfig"). Only endings that no harmless English word has are listed:
// "key" alone would catch "monkey", "bearer" would catch "pallbearer",
// "session" would catch "possession". Each key qualifier followed by "key"
// or "keys" ("apikey", "githubapikey", "sshkeys") is added.
var secretSuffixes = []string{
	"token", "tokens",
	"password", "passwords", "passwd", "passphrase",
	"secret", "secrets",
	"credential", "credentials",
	"jitconfig", "jitconfiguration",
	"sessionid", "sessid",
}

// suffixesByLast indexes secretSuffixes and the key concatenations by their
// last byte, so most words are compared with none or a few of them.
var suffixesByLast = func() (idx [256][]string) {
	all := append([]string(nil), secretSuffixes...)
	for _, q := range keyQualifiers {
		all = append(all, q+"key", q+"keys")
	}
	for _, s := range all {
		last := s[len(s)-1]
		idx[last] = append(idx[last], s)
	}
	return idx
}()

// secretPrefixes are secret as a word's beginning: "passwordhash",
// "passwdfile". "secret" and "token" are deliberately not prefixes:
// "secretary", "tokenizer".
var secretPrefixes = []string{"password", "passwd", "passphrase"}

// SecretName reports whether a column or JSON key name looks secret: the
// deny-by-default name rule. Split into lowercase words (see above), the
// name is secret when any word
//
//   - is password(s), passwd, passphrase(s), pwd, secret(s), token(s),
//     credential(s), jwt(s), bearer, cookie(s), session(s) or
//     authorization;
//   - ends with token(s), password(s), passwd, passphrase, secret(s),
//     credential(s), jitconfig, jitconfiguration, sessionid or sessid, or
//     with one of the key qualifiers listed next followed by "key" or "keys"
//     ("apikey", "githubaccesskey");
//   - begins with password, passwd or passphrase ("passwordhash");
//
// or when the words contain "key" (or "keys") together with one of api,
// private, secret, signing, access, encryption, ssh, hmac, master, auth,
// client, tls ("api_key", "private_ssh_key", "access_key_id"), or "jit"
// together with "config" or "configuration".
//
// Whole words only: "tokenizer", "secretary", "passenger", "keyboard",
// "monkey" and "auth_type" are not secret. Deny by default means harmless
// names can be caught ("token_count"); a column is then allowed per entity
// type with `changecast:"public"` or entities.EntityType.Public.
//
// SecretName does not allocate for names up to 64 bytes per word.
func SecretName(name string) bool { return secretName(name) }

// secretName is SecretName over a string or the raw bytes of a JSON key.
func secretName[T string | []byte](name T) bool {
	var (
		buf               [64]byte
		hasKey, hasKeyQ   bool
		hasJit, hasConfig bool
	)
	i := 0
	for i < len(name) {
		// Skip separators.
		for i < len(name) && !isAlnum(name[i]) {
			i++
		}
		if i >= len(name) {
			break
		}
		// One word: a run of letters or of digits, split at camelCase
		// boundaries: lower→Upper ("apiKey"), and Upper→Upper+lower
		// ("JITConfig": the last upper starts the next word).
		start := i
		i++
		for i < len(name) {
			p, c := name[i-1], name[i]
			if !isAlnum(c) || isDigit(p) != isDigit(c) {
				break
			}
			if isUpper(c) && isLower(p) {
				break
			}
			if isUpper(p) && isUpper(c) && i+1 < len(name) && isLower(name[i+1]) {
				break
			}
			i++
		}
		w := buf[:0]
		for j := start; j < i; j++ {
			c := name[j]
			if isUpper(c) {
				c += 'a' - 'A'
			}
			w = append(w, c)
		}
		if isDigit(w[0]) {
			continue
		}
		switch kindOf(w) {
		case wordSecret:
			return true
		case wordKey:
			hasKey = true
			continue
		case wordQualifier:
			hasKeyQ = true
		case wordJit:
			hasJit = true
			continue
		case wordConfig:
			hasConfig = true
			continue
		}
		for _, s := range suffixesByLast[w[len(w)-1]] {
			if hasSuffix(w, s) {
				return true
			}
		}
		if w[0] == 'p' {
			for _, p := range secretPrefixes {
				if len(w) >= len(p) && string(w[:len(p)]) == p {
					return true
				}
			}
		}
	}
	return hasKey && hasKeyQ || hasJit && hasConfig
}

func hasSuffix(w []byte, s string) bool {
	return len(w) >= len(s) && string(w[len(w)-len(s):]) == s
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlnum(c byte) bool { return isUpper(c) || isLower(c) || isDigit(c) }
