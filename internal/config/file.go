package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// loadFile applies the YAML file at path to c.
func loadFile(c *Config, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return fmt.Errorf("config: %s: larger than %d bytes", path, maxFileBytes)
	}
	return parse(c, path, data)
}

// parse applies the YAML document data, read from the file named name, to c.
//
// The document is a mapping of keys (see Keys) to scalars: strings for
// string and duration keys, integers for integer keys. A key without a
// value (null) is left as it was. Unknown and repeated keys, other types,
// and a second document are refused.
func parse(c *Config, name string, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: nothing set
		}
		return fmt.Errorf("config: %s: %s", name, yamlReason(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: want one YAML document, found more", name)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil // a file of comments only
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config: %s: want a mapping of keys to values (line %d)", name, root.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			return fmt.Errorf("config: %s: a key must be a name (line %d)", name, k.Line)
		}
		f := lookup(k.Value)
		if f == nil {
			return fmt.Errorf("config: %s: unknown key %s (line %d)%s", name, quoteKey(k.Value), k.Line, suggest(k.Value))
		}
		if seen[f.key] {
			return fmt.Errorf("config: %s: key %q appears twice (line %d)", name, f.key, k.Line)
		}
		seen[f.key] = true
		if err := setNode(c, f, v); err != nil {
			return fmt.Errorf("config: %s (from %s line %d): %w", f.key, name, v.Line, err)
		}
	}
	return nil
}

// setNode applies the YAML value v to f's field of c.
func setNode(c *Config, f *field, v *yaml.Node) error {
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
		return nil
	}
	isScalar := v.Kind == yaml.ScalarNode
	switch p := f.ptr(c).(type) {
	case *string:
		if !isScalar || v.ShortTag() != "!!str" {
			return errors.New("want a string (quote the value)")
		}
		*p = v.Value
	case *int64:
		var n int64
		if !isScalar || v.ShortTag() != "!!int" || v.Decode(&n) != nil {
			return errors.New("want an integer")
		}
		*p = n
	case *bool:
		var b bool
		if !isScalar || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
			return errors.New("want true or false")
		}
		*p = b
	case *time.Duration:
		if !isScalar || v.ShortTag() != "!!str" {
			return errors.New(`want a duration such as "30s"`)
		}
		d, err := time.ParseDuration(v.Value)
		if err != nil {
			return fmt.Errorf("%s is not a duration such as \"30s\"", quoteValue(f, v.Value))
		}
		*p = d
	default:
		panic("config: field " + f.key + " has an unsupported type")
	}
	return checkField(c, f)
}

// yamlReason shortens a yaml.v3 error, which starts with "yaml: ".
func yamlReason(err error) string {
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")
}

// quoteKey quotes an unknown key for an error message, shortened.
func quoteKey(k string) string {
	const max = 64
	if len(k) > max {
		k = k[:max] + "..."
	}
	return strconv.Quote(k)
}

// suggest returns `; did you mean "listen"?` when k is one or two edits
// away from a known key, else "".
func suggest(k string) string {
	if len(k) > 64 {
		return ""
	}
	best, bestD := "", 3
	for _, f := range fields {
		if d := editDistance(k, f.key); d < bestD {
			best, bestD = f.key, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
