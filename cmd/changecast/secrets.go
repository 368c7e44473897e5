package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/changecast/changecast/sanitize"
)

// runSecrets prints the sanitize policy: for every entity type, the columns
// that are stripped and why, and the columns explicitly allowed despite a
// secret-looking name, so an operator can review what leaves changecast.
func runSecrets(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("secrets", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var src sources
	src.register(fs)
	if err := applyEnv(fs); err != nil {
		return err
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// Without a database: declared types are listed as configured (no
	// key lookup); with no configuration, the garm domain's types.
	reg, err := src.registry(context.Background(), nil, true)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, et := range reg.Types() {
		stripped, public := sanitize.Policy(et)
		fmt.Fprintf(tw, "%s (table %s)\n", et.Name, et.QualifiedTable())
		if len(stripped) == 0 && len(public) == 0 {
			fmt.Fprintf(tw, "  (no column stripped by mark or declaration)\n")
		}
		for _, r := range stripped {
			fmt.Fprintf(tw, "  %s\tstripped\t%s\n", r.Column, reasonText(r.Reason))
		}
		for _, col := range public {
			fmt.Fprintf(tw, "  %s\tkept\texplicitly allowed despite a secret-looking name\n", col)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(stdout, strings.TrimLeft(`
Every other column, including columns added later, is stripped when its
name looks secret (password, secret, token, credential(s), api_key,
private_key, jit_config, ...), and so is every such key at any depth inside
json and jsonb values. See docs/security.md.
`, "\n"))
	return nil
}

func reasonText(r sanitize.Reason) string {
	switch r {
	case sanitize.ReasonMarked:
		return "marked secret in the Go type"
	case sanitize.ReasonDeclared:
		return "declared secret at registration"
	case sanitize.ReasonName:
		return "its name looks secret"
	default:
		return string(r)
	}
}
