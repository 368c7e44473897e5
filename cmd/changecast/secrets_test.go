package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
)

func TestSecrets_PrintsPolicy(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"secrets"}, &out, &errb); err != nil {
		t.Fatalf("secrets: %v (%s)", err, errb.String())
	}
	for _, want := range []string{
		`(?m)^repository \(table repositories\)$`,
		`(?m)^  webhook_secret\s+stripped\s+marked secret in the Go type$`,
		`(?m)^  password\s+stripped\s+marked secret in the Go type$`,
		`(?m)^  payload\s+stripped\s+marked secret in the Go type$`,
		`(?m)^  jit_configuration\s+stripped`,
		`(?m)^  token_fetched\s+kept\s+explicitly allowed`,
		`(?m)^  credentials_id\s+kept\s+explicitly allowed`,
		`any depth inside\s+json`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
}
