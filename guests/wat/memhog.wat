;; memhog: every call grows memory by 16 pages (1 MiB) at a time until memory.grow returns -1
;; (the host's memory cap), then executes `unreachable`.
(module
  (memory (export "memory") 1)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (unreachable))
)
