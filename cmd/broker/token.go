package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
)

const tokenUsage = `Usage:
  broker token add --user U [--name N] [--email E] [--valid-until RFC3339|DATE | --valid-for DURATION] [--role device|service]
  broker token list [--user U] [--json]
  broker token revoke ID
Each takes --data-dir (default $TETHER_DATA_DIR or ./data).
`

// dataDirFlag adds --data-dir with the same default and variable as serve.
func dataDirFlag(fs *flag.FlagSet) *string {
	def := broker.DefaultConfig().DataDir
	if v, ok := os.LookupEnv(envName("data-dir")); ok {
		def = v
	}
	return fs.String("data-dir", def, "data directory of the broker")
}

// noArgs refuses words left after the flags: the flag package stops at the
// first one, so "--name Alice Smith --role service" would drop everything
// after "Alice" and issue a device token without a word of warning.
func noArgs(fs *flag.FlagSet, cmd string) error {
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q (quote a value with spaces: --name \"Alice Smith\")", cmd, fs.Arg(0))
	}
	return nil
}

func tokenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("token: missing subcommand\n%s", tokenUsage)
	}
	fs := flag.NewFlagSet("token "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := dataDirFlag(fs)
	parse := func() error {
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err.Error()}
		}
		return nil
	}
	switch args[0] {
	case "add":
		user := fs.String("user", "", "user the token authenticates (required)")
		name := fs.String("name", "", "holder's name")
		email := fs.String("email", "", "holder's email")
		role := fs.String("role", string(auth.RoleDevice), "device or service")
		until := fs.String("valid-until", "", "expiry as RFC 3339 (2027-01-31T00:00:00Z) or a date (2027-01-31: its start, UTC)")
		validFor := fs.Duration("valid-for", 0, "expiry as a duration from now, e.g. 720h (default 8760h)")
		if err := parse(); err != nil {
			return err
		}
		if err := noArgs(fs, "token add"); err != nil {
			return err
		}
		if *user == "" {
			return usagef("token add: --user is required")
		}
		n := auth.NewToken{User: *user, Name: *name, Email: *email, Role: auth.Role(*role)}
		switch {
		case *until != "" && *validFor != 0:
			return usagef("token add: give --valid-until or --valid-for, not both")
		case *until != "":
			t, err := time.Parse(time.RFC3339, *until)
			if err != nil {
				var derr error
				if t, derr = time.Parse(time.DateOnly, *until); derr != nil {
					return usagef("token add: --valid-until %q: want RFC 3339 like 2027-01-31T00:00:00Z, or a date like 2027-01-31 (%v)", *until, err)
				}
			}
			n.ValidUntil = t
		case *validFor < 0:
			return usagef("token add: --valid-for must be positive")
		case *validFor > 0:
			n.ValidUntil = time.Now().Add(*validFor)
		default:
			n.ValidUntil = time.Now().Add(365 * 24 * time.Hour)
		}
		if err := n.Validate(time.Now()); err != nil {
			return usagef("token add: %v", err)
		}
		var res broker.TokenIssued
		if err := broker.RunAdmin(ctx, *dir, "token.add", n, &res); err != nil {
			return err
		}
		fmt.Fprintln(stdout, res.Token)
		fmt.Fprintf(stderr, "issued token %s for user %s (%s), valid until %s; it is shown only now\n",
			res.Info.ID, res.Info.User, res.Info.Role, res.Info.ValidUntil.Format(time.RFC3339))
		return nil
	case "list":
		user := fs.String("user", "", "only this user's tokens")
		asJSON := fs.Bool("json", false, "print JSON")
		if err := parse(); err != nil {
			return err
		}
		if err := noArgs(fs, "token list"); err != nil {
			return err
		}
		var toks []auth.Token
		if err := broker.RunAdmin(ctx, *dir, "token.list", map[string]string{"user": *user}, &toks); err != nil {
			return err
		}
		if toks == nil {
			toks = []auth.Token{} // an empty JSON list, not null
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(toks)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSER\tROLE\tNAME\tEMAIL\tVALID UNTIL\tSTATUS")
		for _, t := range toks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.User, t.Role, t.Name, t.Email,
				t.ValidUntil.Format(time.RFC3339), status(t))
		}
		return tw.Flush()
	case "revoke":
		if err := parse(); err != nil {
			return err
		}
		// Flags may also follow the ID: "revoke ID --data-dir D".
		id := fs.Arg(0)
		if fs.NArg() >= 1 {
			if err := fs.Parse(fs.Args()[1:]); err != nil {
				return usageError{err.Error()}
			}
		}
		if id == "" || fs.NArg() != 0 {
			return usagef("token revoke: want exactly one token ID (see broker token list)")
		}
		var t auth.Token
		if err := broker.RunAdmin(ctx, *dir, "token.revoke", map[string]string{"id": id}, &t); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked token %s of user %s\n", t.ID, t.User)
		return nil
	}
	return usagef("token: unknown subcommand %q\n%s", args[0], tokenUsage)
}

func status(t auth.Token) string {
	if err := t.Valid(time.Now()); err != nil {
		if errors.Is(err, auth.ErrRevoked) {
			return "revoked"
		}
		return "expired"
	}
	return "valid"
}
