package apitoken_test

import (
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"regexp"
	"testing"

	"github.com/agynio/users/internal/apitoken"
)

var format = regexp.MustCompile(`^agyn_[0-9A-Za-z]{44}$`)

func TestNewTokenFormat(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		tok := apitoken.New()
		if !format.MatchString(tok.Plaintext) {
			t.Fatalf("token %q does not match %s", tok.Plaintext, format)
		}
		if tok.Prefix != tok.Plaintext[:8] {
			t.Fatalf("prefix %q, want the token's first 8 characters", tok.Prefix)
		}
		sum := sha256.Sum256([]byte(tok.Plaintext))
		if tok.Hash != hex.EncodeToString(sum[:]) {
			t.Fatalf("hash is not the token's SHA-256 in lowercase hex")
		}
		if seen[tok.Plaintext] {
			t.Fatalf("token repeated after %d", len(seen))
		}
		seen[tok.Plaintext] = true
	}
}

// Each 11-character chunk decodes to a number below 2^64, and together
// the four carry 256 bits: over many tokens, every bit of every chunk is
// seen both set and clear, which a token built from fewer random bytes,
// or a chunk left at zero, would not show.
func TestNewTokenCarries256Bits(t *testing.T) {
	t.Parallel()
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	var set, clear [4][64]bool
	limit := new(big.Int).Lsh(big.NewInt(1), 64)
	for range 2000 {
		body := apitoken.New().Plaintext[len(apitoken.Prefix):]
		for c := range 4 {
			n := new(big.Int)
			for _, r := range body[c*11 : (c+1)*11] {
				n.Mul(n, big.NewInt(62))
				n.Add(n, big.NewInt(int64(indexOf(alphabet, r))))
			}
			if n.Cmp(limit) >= 0 {
				t.Fatalf("chunk %d decodes to %s, not below 2^64", c, n)
			}
			for bit := range 64 {
				if n.Bit(bit) == 1 {
					set[c][bit] = true
				} else {
					clear[c][bit] = true
				}
			}
		}
	}
	for c := range 4 {
		for bit := range 64 {
			if !set[c][bit] || !clear[c][bit] {
				t.Fatalf("bit %d of chunk %d never varies", bit, c)
			}
		}
	}
}

func indexOf(s string, r rune) int {
	for i, c := range s {
		if c == r {
			return i
		}
	}
	return -1
}
