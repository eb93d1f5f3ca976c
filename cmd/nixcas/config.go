package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// addConfigFlag gives cmd a --config FILE flag: a TOML file whose keys are
// the names of cmd's flags (without the dashes), applied before cmd runs.
// Flags given on the command line win over the file. It works on whatever
// flags cmd has when it runs, so flags added later need nothing more.
func addConfigFlag(cmd *cobra.Command) *cobra.Command {
	var file string
	cmd.Flags().StringVar(&file, "config", "", "TOML file of flag values (keys are flag names; command-line flags win)")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if file != "" {
			if err := applyConfigFile(c.Flags(), file); err != nil {
				return err
			}
		}
		return run(c, args)
	}
	return cmd
}

// configKeysRefused are flags a config file cannot set.
var configKeysRefused = []string{"config", "help", "version"}

// applyConfigFile sets the flags of fs named by the keys of the TOML file
// that were not set on the command line. A key that is not a flag, a
// table, or a value the flag does not accept is an error naming the file
// and the key. A list sets a repeatable flag once per element.
func applyConfigFile(fs *pflag.FlagSet, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var values map[string]any
	if err := toml.Unmarshal(b, &values); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("config %s:%d:%d: %v", file, row, col, de)
		}
		return fmt.Errorf("config %s: %w", file, err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		f := fs.Lookup(key)
		if f == nil || slices.Contains(configKeysRefused, key) {
			return fmt.Errorf("config %s: unknown key %q: not a flag this command takes in a config file", file, key)
		}
		if f.Changed {
			continue
		}
		vals, err := configValues(values[key])
		if err != nil {
			return fmt.Errorf("config %s: key %q: %w", file, key, err)
		}
		repeatable := strings.HasSuffix(f.Value.Type(), "Slice") || strings.HasSuffix(f.Value.Type(), "Array")
		if _, list := values[key].([]any); list && !repeatable {
			return fmt.Errorf("config %s: key %q: a list, but --%s takes one value", file, key, key)
		}
		for _, v := range vals {
			if err := fs.Set(key, v); err != nil {
				return fmt.Errorf("config %s: key %q: %w", file, key, err)
			}
		}
	}
	return nil
}

// configValues returns a TOML value as the flag values it stands for.
func configValues(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	case int64:
		return []string{strconv.FormatInt(v, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(v, 'g', -1, 64)}, nil
	case []any:
		var out []string
		for _, e := range v {
			if _, nested := e.([]any); nested {
				return nil, errors.New("a list of lists")
			}
			s, err := configValues(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case map[string]any:
		return nil, errors.New("a table, want a flag value")
	}
	return nil, fmt.Errorf("a %T, want a string, number, boolean or list", v)
}
