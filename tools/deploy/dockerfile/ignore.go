package dockerfile

import (
	"bytes"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// Ignore is a parsed .dockerignore, matched the way BuildKit matches it
// when it sends the build context.
type Ignore struct {
	pm *patternmatcher.PatternMatcher
}

// ParseIgnore parses the contents of a .dockerignore.
func ParseIgnore(src []byte) (*Ignore, error) {
	patterns, err := ignorefile.ReadAll(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, err
	}
	return &Ignore{pm: pm}, nil
}

// Excludes reports whether path (slash-separated, relative to the context)
// is left out of the build context.
func (ig *Ignore) Excludes(path string) (bool, error) {
	return ig.pm.MatchesOrParentMatches(path)
}
