package client

import (
	"strings"
	"testing"
)

func TestEventsURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":                         "ws://127.0.0.1:8080/api/v1/ws/events",
		"https://cc.example.com/":                       "wss://cc.example.com/api/v1/ws/events",
		"ws://127.0.0.1:8080/api/v1/ws/events":          "ws://127.0.0.1:8080/api/v1/ws/events",
		"WSS://cc.example.com":                          "wss://cc.example.com/api/v1/ws/events",
		"https://cc.example.com/changecast":             "wss://cc.example.com/changecast/api/v1/ws/events",
		" http://[::1]:8080 ":                           "ws://[::1]:8080/api/v1/ws/events",
		"https://proxy.example.com/cc/api/v1/ws/events": "wss://proxy.example.com/cc/api/v1/ws/events",
	} {
		got, err := EventsURL(in)
		if err != nil || got != want {
			t.Errorf("EventsURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "http://u:secret@x", "http://x/?token=abc", "http://x/#f"} {
		if got, err := EventsURL(bad); err == nil {
			t.Errorf("EventsURL(%q) = %q, want an error", bad, got)
		}
	}
	for _, leaky := range []string{"http://u:secret@x", "http://u:secret@x:badport", "http://x/?token=secret", "ftp://u:secret@x"} {
		if _, err := EventsURL(leaky); err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("EventsURL(%q): error %v, want one that does not repeat the secret", leaky, err)
		}
	}
}

func TestParseFrame_SkipsUnknownFrames(t *testing.T) {
	for _, data := range []string{
		`{"namespace":"events","name":"system_state","id":"","args":{"cursor":7,"type":["x"]}}`,
		`{"namespace":"later","name":"thing"}`,
	} {
		f, err := parseFrame([]byte(data), defaultRegistry())
		if err != nil || f.kind != 0 {
			t.Errorf("parseFrame(%s) = kind %d, %v; want skipped", data, f.kind, err)
		}
	}
}
