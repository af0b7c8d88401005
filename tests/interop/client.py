"""A Python grpcio client built from proto/ (the interop check of the trust
model): with the student's certificate it gets labels from the aggregator;
the same certificate gets PERMISSION_DENIED (or a failed handshake) from a
teacher; a client without a certificate gets nothing from the aggregator.

Usage: client.py STUBS_DIR CERTS_DIR AGGREGATOR_ADDR TEACHER_ADDR
Exits non-zero with a message on the first check that fails.
"""

import sys

import grpc


def main() -> None:
    stubs, certs, aggregator, teacher = sys.argv[1:5]
    sys.path.insert(0, stubs)
    from pate.v1 import pate_pb2, pate_pb2_grpc  # noqa: E402 (generated at run time)

    def read(name: str) -> bytes:
        with open(f"{certs}/{name}", "rb") as f:
            return f.read()

    ca = read("ca.pem")
    student = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=read("student-0.key"), certificate_chain=read("student-0.pem"))
    # 2 blank 28x28 images as raw bytes.
    samples = pate_pb2.Tensor(shape=[2, 28, 28], dtype=pate_pb2.DTYPE_U8, data=bytes(2 * 28 * 28))

    with grpc.secure_channel(aggregator, student) as ch:
        resp = pate_pb2_grpc.AggregatorStub(ch).Label(
            pate_pb2.LabelRequest(request_id="python-interop-1", samples=samples), timeout=60)
        assert len(resp.labels) == 2, resp
        assert resp.budget.caller == "pate://student/0", resp.budget
        print(f"aggregator labelled 2 samples for {resp.budget.caller}: {list(resp.labels)}, "
              f"epsilon spent {resp.budget.epsilon_spent:.3f}")

    with grpc.secure_channel(teacher, student) as ch:
        try:
            pate_pb2_grpc.TeacherStub(ch).Vote(pate_pb2.VoteRequest(request_id="python-interop-2", samples=samples), timeout=30)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE), e
            print(f"teacher refused the student's certificate: {e.code().name}: {e.details()}")
        else:
            sys.exit("FAIL: a teacher answered a student's certificate")

    anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(aggregator, anonymous) as ch:
        try:
            pate_pb2_grpc.AggregatorStub(ch).Budget(pate_pb2.BudgetRequest(), timeout=30)
        except grpc.RpcError as e:
            print(f"aggregator refused a client without a certificate: {e.code().name}")
        else:
            sys.exit("FAIL: the aggregator answered a client without a certificate")
    print("python interop: ok")


if __name__ == "__main__":
    main()
