package wire_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/wire"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"a", true},
		{"alice", true},
		{"Alice-2_x.y", true},
		{"0", true},
		{".", true},
		{"..", true},
		{"-", true},
		{"_", true},
		{"AZaz09._-", true},
		{strings.Repeat("x", wire.MaxNameLen), true},

		{"", false},
		{strings.Repeat("x", wire.MaxNameLen+1), false},
		{"a/b", false},
		{"/", false},
		{"+", false},
		{"#", false},
		{"a+", false},
		{"a#", false},
		{"$SYS", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"a:b", false},
		{"a@b", false},
		{"a~b", false},
		{"é", false},
		{"ä" + strings.Repeat("a", 30), false},
		{"a\x7f", false},
		{"\xff", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, wire.ValidName(tc.name), "ValidName(%q)", tc.name)
			err := wire.CheckName("session", tc.name)
			if tc.want {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.ErrorContains(t, err, "invalid session name")
		})
	}
}

func TestCheckNameSaysWhat(t *testing.T) {
	err := wire.CheckName("user", "a/b")
	require.EqualError(t, err, `invalid user name "a/b": want 1-64 characters from [A-Za-z0-9._-]`)
}
