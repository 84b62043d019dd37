// Package apitoken makes personal API tokens: "agyn_" and 44 base62
// characters that encode 32 bytes from crypto/rand. The service keeps a
// token's SHA-256 (Hash) and its first PrefixLen characters, never the
// token: the plaintext exists only in the response that creates it.
package apitoken

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// Prefix starts every token, for the gateway, and for secret scanners, to
// recognise one.
const Prefix = "agyn_"

// Len is a token's length: the prefix and 44 base62 characters.
const Len = len(Prefix) + chunks*chunkChars

// PrefixLen is how much of a token is stored and shown, to tell a user's
// tokens apart: the prefix and three characters, 15 bits of the secret.
const PrefixLen = 8

// The 32 random bytes are four 64-bit chunks, each written as 11 base62
// digits (62^11 > 2^64), most significant first: 44 characters that keep
// all 256 bits, at a fixed length, with no big-number arithmetic.
const (
	chunks     = 4
	chunkChars = 11
	alphabet   = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// A Token is a new token: the plaintext, for the response that creates it
// only, and what is stored of it.
type Token struct {
	Plaintext string
	Hash      string // Hash(Plaintext)
	Prefix    string // the first PrefixLen characters
}

// New makes a token from 32 bytes of crypto/rand.
func New() Token {
	var secret [chunks * 8]byte
	rand.Read(secret[:]) // never fails (see crypto/rand.Read)
	b := make([]byte, Len)
	copy(b, Prefix)
	for c := range chunks {
		n := binary.BigEndian.Uint64(secret[c*8:])
		for i := chunkChars - 1; i >= 0; i-- {
			b[len(Prefix)+c*chunkChars+i] = alphabet[n%62]
			n /= 62
		}
	}
	plaintext := string(b)
	return Token{Plaintext: plaintext, Hash: Hash(plaintext), Prefix: plaintext[:PrefixLen]}
}

// Hash is what the service stores of a token and what ResolveAPIToken
// takes: the SHA-256 of the whole token, as 64 lowercase hex digits.
func Hash(plaintext string) string {
	sum := sha256.Sum256([]byte(plaintext))
	return hex.EncodeToString(sum[:])
}
