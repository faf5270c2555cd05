"""The RNN encoder-decoder of Cho et al. (2014), as the lecture writes it.

    encoder   h_1..h_S = RNN(e(x_1..x_S))            (fastrnn GRU/LSTM, layers, bidirectional)
    context   c = tanh(V h_last)                      (h_last: top layer, every direction)
    decoder   h'_0 = tanh(V' c)
              h'_t = GRU(h'_{t-1}, [e(y_{t-1}); c])   (the context enters every step)
    output    s_t = O_h h'_t + O_y e(y_{t-1}) + O_c c,  p(y_t | ...) = softmax(s_t)

Training is teacher-forced: the target is known, so the decoder is ONE fused layer call
over all steps, and c's part of the decoder's input projection (W_ih[:, E:] c) is formed
once per sentence and passed as the layer's ``input_bias`` instead of concatenating c to
every step's input. Scheduled sampling (``sampling_prob``) feeds the model's own previous
prediction with that probability: that path steps the fused cell, one step per token.
In every decoder step, too, c's part of the input projection is formed once per sentence
(the step kernel's per-row input bias), so a step multiplies e(y_{t-1}) alone.
Decoding (``generate``): beam search batched over sentences × beams on the fused
decoding-step kernel, one Python iteration per output token; beam 1 is greedy decoding.

``layers`` picks the recurrent modules: ``fastrnn`` (default) or ``torch.nn``, which
builds the same model, parameter for parameter, with torch.nn.GRU/LSTM and
torch.nn.GRUCell's kernel (the baseline of the benchmark and of the tests).
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import functional


class Seq2Seq(nn.Module):
    """Encoder-decoder with a fixed-size context (no attention).

    Args:
        src_vocab: source vocabulary size (token 0 is padding).
        tgt_vocab: target vocabulary size (token 0 is padding).
        embed: embedding size E.
        hidden: hidden size H of the decoder and the encoder.
        context: context size C (default H).
        enc_layers: encoder layers.
        bidirectional: a bidirectional encoder.
        cell: "gru" or "lstm", the encoder's cell (the decoder is a GRU).
        dropout: between the encoder's layers, in training.
        bos: the target start token.
        eos: the target end token.
        layers: ``fastrnn`` or ``torch.nn`` (see the module docstring).

    Raises:
        ValueError: an unknown cell.

    Token tensors are batch-first: src [B, S] with src_lengths [B] (an int64 tensor on the
    CPU, or a list),
    target input [B, T] (bos, y_1, ..., y_{T-1}).
    """

    def __init__(self, src_vocab, tgt_vocab, embed=64, hidden=128, context=None, enc_layers=1,
                 bidirectional=True, cell="gru", dropout=0.0, bos=1, eos=2, layers=fastrnn):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        C = context or hidden
        D = 2 if bidirectional else 1
        self.bos, self.eos, self.embed_size, self.context_size = bos, eos, embed, C
        self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=0)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=0)
        enc = layers.GRU if cell == "gru" else layers.LSTM
        self.encoder = enc(embed, hidden, num_layers=enc_layers, bidirectional=bidirectional,
                           dropout=dropout)
        self.V = nn.Linear(D * hidden, C)                 # c = tanh(V h_last)
        self.V_dec = nn.Linear(C, hidden)                 # h'_0 = tanh(V' c)
        self.decoder = layers.GRU(embed + C, hidden)      # input [e(y_{t-1}); c]
        self.O_h = nn.Linear(hidden, tgt_vocab)
        self.O_y = nn.Linear(embed, tgt_vocab, bias=False)
        self.O_c = nn.Linear(C, tgt_vocab, bias=False)

    @property
    def fused(self):
        return isinstance(self.decoder, fastrnn.GRU)

    # ------------------------------------------------------------- encoder
    def encode(self, src, src_lengths):
        """src [B, S], src_lengths [B] (a tensor or a list, as pack_padded_sequence takes)
        -> context c [B, C]."""
        if not isinstance(src_lengths, torch.Tensor):
            src_lengths = torch.as_tensor(src_lengths, dtype=torch.int64)
        if src.dim() != 2 or src_lengths.shape != (src.shape[0],):
            raise ValueError(f"src must be [B, S] with src_lengths [B], got {tuple(src.shape)} "
                             f"and {tuple(src_lengths.shape)}")
        enc, D = self.encoder, 2 if self.encoder.bidirectional else 1
        if isinstance(enc, (fastrnn.GRU, fastrnn.LSTM)):
            # the lengths straight to the fused layers: no packing and unpacking copies,
            # and a graph torch.compile traces whole (pack_padded_sequence is on its skip list)
            enc._update_flat_weights()
            x = self.src_embed(src).transpose(0, 1)                       # [S, B, E]
            h0 = x.new_zeros(enc.num_layers * D, src.shape[0], enc.hidden_size)
            _, h_n = enc._recur(x, (h0, h0) if isinstance(enc, fastrnn.LSTM) else (h0,),
                                src_lengths.cpu())
        else:
            packed = pack_padded_sequence(self.src_embed(src), src_lengths.cpu(),
                                          batch_first=True, enforce_sorted=False)
            _, h_n = enc(packed)
        if isinstance(h_n, tuple):                        # the states: (h_n,) or (h_n, c_n)
            h_n = h_n[0]
        h_last = h_n[-D:].transpose(0, 1).reshape(src.shape[0], -1)   # [B, D*H]
        return torch.tanh(self.V(h_last))

    # ------------------------------------------------------------- decoder
    def _weights(self):
        return self.decoder._flat_weights            # w_ih [3H, E+C], w_hh, b_ih, b_hh

    def _stepper(self, c, graph=False):
        """-> step(e [N, E], h [N, H]) -> h': the decoder cell on input [e; c].

        fastrnn: c's part of the input projection is formed once here and enters every
        step as the fused step kernel's per-row input bias, so a step multiplies only
        e (E columns of W_ih, not E + C). torch.nn: GRUCell's kernel on [e; c].
        """
        w_ih, w_hh, *b = self._weights()
        if not self.fused:
            return lambda e, h: torch._VF.gru_cell(torch.cat([e, c], dim=1), h, w_ih, w_hh, *b)
        E = self.embed_size
        w_e = w_ih[:, :E] if torch.is_grad_enabled() else w_ih[:, :E].contiguous()
        return functional.stepper("gru", [w_e, w_hh, *b], c, input_bias=F.linear(c, w_ih[:, E:]),
                                  backend=self.decoder.backend, graph=graph)

    def _scores(self, h, e, c_out):
        """s_t = O_h h'_t + O_y e(y_{t-1}) + O_c c (c_out = O_c c, [B, V] or broadcastable)."""
        return self.O_h(h) + self.O_y(e) + c_out

    def forward(self, src, src_lengths, tgt_in, sampling_prob=0.0):
        """Teacher-forced logits [B, T, V] for target input tgt_in [B, T].

        With ``sampling_prob`` > 0 (training), each step's input is, with that
        probability per row, the model's own previous prediction (argmax) instead of
        the ground truth (scheduled sampling, Bengio et al. 2015).
        """
        c = self.encode(src, src_lengths)
        h0 = torch.tanh(self.V_dec(c))
        c_out = self.O_c(c)
        if sampling_prob > 0 and self.training:
            return self._sampled(c, h0, c_out, tgt_in, sampling_prob)
        e = self.tgt_embed(tgt_in.t())                    # [T, B, E] time-major
        if self.fused:
            w_ih, w_hh, *b = self._weights()
            E = self.embed_size
            # c's part of every step's input projection, formed once per sentence
            c_proj = F.linear(c, w_ih[:, E:]).unsqueeze(0)              # [1, B, 3H]
            out, _ = functional.gru(e, h0.unsqueeze(0), [w_ih[:, :E], w_hh, *b],
                                    input_bias=c_proj, backend=self.decoder.backend)
        else:
            x = torch.cat([e, c.unsqueeze(0).expand(e.shape[0], -1, -1)], dim=2)
            out, _ = self.decoder(x, h0.unsqueeze(0))
        return self._scores(out, e, c_out).transpose(0, 1)

    def _sampled(self, c, h, c_out, tgt_in, p):
        step = self._stepper(c)
        prev, logits = tgt_in[:, 0], []
        for t in range(tgt_in.shape[1]):
            if t > 0:
                own = logits[-1].detach().argmax(-1)
                coin = torch.rand(own.shape, device=own.device) < p
                prev = torch.where(coin, own, tgt_in[:, t])
            e = self.tgt_embed(prev)
            h = step(e, h)
            logits.append(self._scores(h, e, c_out))
        return torch.stack(logits, dim=1)

    # ------------------------------------------------------------ decoding
    @torch.no_grad()
    def generate(self, src, src_lengths, beam=1, max_len=32, length_penalty=1.0, graph=False):
        """Beam search (beam 1: greedy), batched over sentences × beams.

        ``graph=True`` on CUDA replays each decoder step from a CUDA graph
        (``functional.stepper``); the same tokens and scores, less host time per token.

        Returns (tokens [B, L] without bos, ending with eos and then 0s; a row that hit
        ``max_len`` has no eos), scores [B] (the best beam's log-probability divided by
        its length ** length_penalty). Beams are ranked by total log-probability while
        they grow; the finished ones are compared length-normalised at the end.
        """
        if beam < 1 or max_len < 1:
            raise ValueError(f"beam and max_len must be >= 1, got {beam} and {max_len}")
        B, k = src.shape[0], beam
        c = self.encode(src, src_lengths).repeat_interleave(k, dim=0)     # [N, C], N = B*k
        h = torch.tanh(self.V_dec(c))
        c_out, step = self.O_c(c), self._stepper(c, graph)
        scores = c.new_full((B, k), float("-inf"))
        scores[:, 0] = 0                                  # expand from one beam at first
        tokens = src.new_zeros(B, k, 0)
        done = torch.zeros(B, k, dtype=torch.bool, device=src.device)
        length = torch.zeros(B, k, device=src.device)
        prev = src.new_full((B * k,), self.bos)
        rows = torch.arange(B, device=src.device).unsqueeze(1) * k
        for _ in range(max_len):
            e = self.tgt_embed(prev)
            h = step(e, h)
            logp = F.log_softmax(self._scores(h, e, c_out), dim=-1).view(B, k, -1)
            V = logp.shape[-1]
            # a finished beam only repeats eos (padding later), at no cost
            logp = torch.where(done.unsqueeze(-1), torch.full_like(logp, float("-inf")), logp)
            logp[..., self.eos] = torch.where(done, 0.0, logp[..., self.eos])
            scores, idx = (scores.unsqueeze(-1) + logp).view(B, k * V).topk(k, dim=1)
            src_beam, tok = idx // V, idx % V
            pick = (rows + src_beam).view(-1)             # [N] rows of the chosen parents
            h, prev = h[pick], tok.view(-1)
            was_done = done.gather(1, src_beam)
            tokens = torch.cat([tokens.gather(1, src_beam.unsqueeze(-1).expand_as(tokens)),
                                torch.where(was_done, 0, tok).unsqueeze(-1)], dim=2)
            length = length.gather(1, src_beam) + (~was_done)
            done = was_done | (tok == self.eos)
            if bool(done.all()):
                break
        norm = scores / length.clamp(min=1) ** length_penalty
        best = norm.argmax(dim=1)
        return tokens[torch.arange(B), best], norm[torch.arange(B), best]
