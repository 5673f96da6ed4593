// A real Fast DDS participant for end-to-end tests of ros2-cni.
//
// It joins a domain, publishes and subscribes one topic (by default the one a
// ROS 2 talker uses: "rt/chatter", type std_msgs::msg::dds_::String_, so
// `ros2 topic echo /chatter` sees it and ROS 2 talkers feed it), and prints
// machine-readable lines on stdout (flushed at once):
//
//   ready guid=<24 hex digits> domain=<d> transport=<udp|default>
//   discovered <guid prefix>      a remote participant appeared (SPDP)
//   lost <guid prefix>            a remote participant left or timed out
//   matched <n>                   remote endpoints matched with ours changed:
//                                 n = our writer's remote readers + our
//                                 reader's remote writers (own endpoints excluded)
//   received <n> <text>           n = remote samples received so far
//   done matched=<max n> received=<n> sent=<n> ok=<0|1>
//
// Diagnostics go to stderr. Exit status: 0 when the expectations were met
// (see --min-*), 1 when not, 2 on a usage or setup error.
//
// Usage: participant [options]
//   --domain D          domain id (like ROS_DOMAIN_ID), default 0 or $ROS_DOMAIN_ID
//   --duration SECS     run at most this long, default 10
//   --topic NAME        default rt/chatter
//   --rate HZ           samples per second to publish, default 10 (0: subscribe only)
//   --name NAME         participant name (PID_ENTITY_NAME), default ros2_cni_fastdds
//   --text TEXT         sample text prefix, default "hello"; samples read "<text> <seq>"
//   --min-matched N     success needs >= N remote endpoints matched, default 1
//   --min-received N    success needs >= N remote samples, default 1
//   --exit-on-success   stop as soon as both minimums are met
//   --transport udp|default
//                       udp (default): UDPv4 only. Fast DDS's default adds
//                       shared memory, which works between network namespaces
//                       of one host and would bypass the network under test.
//                       Either way the UDPv4 transport keeps Fast DDS's
//                       defaults, multicast TTL 1 included.
//
// Reliable, transient-local-free QoS defaults, keep-last history: Fast DDS
// defaults apart from the transport choice. SIGINT/SIGTERM end it early
// (it still prints "done").

#include <fastdds/dds/domain/DomainParticipant.hpp>
#include <fastdds/dds/domain/DomainParticipantFactory.hpp>
#include <fastdds/dds/domain/DomainParticipantListener.hpp>
#include <fastdds/dds/publisher/DataWriter.hpp>
#include <fastdds/dds/publisher/DataWriterListener.hpp>
#include <fastdds/dds/publisher/Publisher.hpp>
#include <fastdds/dds/subscriber/DataReader.hpp>
#include <fastdds/dds/subscriber/DataReaderListener.hpp>
#include <fastdds/dds/subscriber/SampleInfo.hpp>
#include <fastdds/dds/subscriber/Subscriber.hpp>
#include <fastdds/dds/topic/Topic.hpp>
#include <fastdds/dds/topic/TopicDataType.hpp>
#include <fastdds/dds/topic/TypeSupport.hpp>
#include <fastdds/rtps/common/InstanceHandle.h>
#include <fastdds/rtps/transport/UDPv4TransportDescriptor.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

using namespace eprosima::fastdds::dds;
namespace rtps = eprosima::fastrtps::rtps;

namespace {

std::mutex out_mutex;

void line(const std::string& s)
{
    std::lock_guard<std::mutex> lock(out_mutex);
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

std::string hex_prefix(const rtps::GuidPrefix_t& p)
{
    std::ostringstream o;
    for (unsigned i = 0; i < rtps::GuidPrefix_t::size; ++i)
    {
        o << std::hex << std::setw(2) << std::setfill('0') << static_cast<unsigned>(p.value[i]);
    }
    return o.str();
}

// std_msgs/String: one CDR string. Serialized by hand (CDR_LE) so the
// program does not depend on a generated type or on Fast CDR's API version.
struct StringMsg
{
    std::string data;
};

class StringType : public TopicDataType
{
public:
    StringType()
    {
        setName("std_msgs::msg::dds_::String_");
        m_typeSize = 4 + 4 + 4096 + 1;  // encapsulation + length + bounded text
        m_isGetKeyDefined = false;
    }

    bool serialize(void* data, rtps::SerializedPayload_t* payload) override
    {
        const auto* m = static_cast<StringMsg*>(data);
        const uint32_t n = static_cast<uint32_t>(m->data.size() + 1);
        const uint32_t total = 4 + 4 + n;
        if (n > 4097 || payload->max_size < total)
        {
            return false;
        }
        uint8_t* b = payload->data;
        b[0] = 0x00; b[1] = 0x01; b[2] = 0; b[3] = 0;  // CDR_LE
        for (int i = 0; i < 4; ++i)
        {
            b[4 + i] = static_cast<uint8_t>(n >> (8 * i));
        }
        std::memcpy(b + 8, m->data.c_str(), n);
        payload->length = total;
        payload->encapsulation = CDR_LE;
        return true;
    }

    bool deserialize(rtps::SerializedPayload_t* payload, void* data) override
    {
        auto* m = static_cast<StringMsg*>(data);
        const uint8_t* b = payload->data;
        if (payload->length < 8)
        {
            return false;
        }
        const bool le = b[1] & 1;
        uint32_t n = 0;
        for (int i = 0; i < 4; ++i)
        {
            n |= static_cast<uint32_t>(b[4 + (le ? i : 3 - i)]) << (8 * i);
        }
        if (n == 0 || n > payload->length - 8)
        {
            return false;
        }
        m->data.assign(reinterpret_cast<const char*>(b + 8), n - 1);
        return true;
    }

    std::function<uint32_t()> getSerializedSizeProvider(void* data) override
    {
        const auto* m = static_cast<StringMsg*>(data);
        const uint32_t n = static_cast<uint32_t>(m->data.size() + 1);
        return [n]() { return 4 + 4 + n; };
    }

    void* createData() override { return new StringMsg(); }
    void deleteData(void* data) override { delete static_cast<StringMsg*>(data); }

    bool getKey(void*, rtps::InstanceHandle_t*, bool) override { return false; }
};

struct Options
{
    uint32_t domain = 0;
    double duration = 10;
    std::string topic = "rt/chatter";
    double rate = 10;
    std::string name = "ros2_cni_fastdds";
    std::string text = "hello";
    long min_matched = 1;
    long min_received = 1;
    bool exit_on_success = false;
    bool udp_only = true;
};

std::atomic<bool> stop{false};

void on_signal(int) { stop = true; }

class State : public DomainParticipantListener
{
public:
    rtps::GuidPrefix_t own;
    std::atomic<long> writer_remote{0};
    std::atomic<long> reader_remote{0};
    std::atomic<long> max_matched{0};
    std::atomic<long> received{0};

    bool remote(const rtps::InstanceHandle_t& h) const
    {
        return rtps::iHandle2GUID(h).guidPrefix != own;
    }

    void report_matched()
    {
        const long n = writer_remote + reader_remote;
        long m = max_matched;
        while (n > m && !max_matched.compare_exchange_weak(m, n))
        {
        }
        line("matched " + std::to_string(n));
    }

    void on_participant_discovery(DomainParticipant*, rtps::ParticipantDiscoveryInfo&& info) override
    {
        using S = rtps::ParticipantDiscoveryInfo;
        const std::string who = hex_prefix(info.info.m_guid.guidPrefix);
        switch (info.status)
        {
            case S::DISCOVERED_PARTICIPANT:
                line("discovered " + who);
                break;
            case S::REMOVED_PARTICIPANT:
            case S::DROPPED_PARTICIPANT:
                line("lost " + who);
                break;
            default:
                break;
        }
    }

    void on_publication_matched(DataWriter*, const PublicationMatchedStatus& info) override
    {
        if (remote(info.last_subscription_handle))
        {
            writer_remote += info.current_count_change;
            report_matched();
        }
    }

    void on_subscription_matched(DataReader*, const SubscriptionMatchedStatus& info) override
    {
        if (remote(info.last_publication_handle))
        {
            reader_remote += info.current_count_change;
            report_matched();
        }
    }

    void on_data_available(DataReader* reader) override
    {
        StringMsg m;
        SampleInfo si;
        while (reader->take_next_sample(&m, &si) == ReturnCode_t::RETCODE_OK)
        {
            if (si.valid_data && remote(si.publication_handle))
            {
                const long n = ++received;
                line("received " + std::to_string(n) + " " + m.data);
            }
        }
    }
};

int usage(const char* msg)
{
    std::cerr << "participant: " << msg << "\n"
              << "usage: participant [--domain D] [--duration SECS] [--topic NAME] [--rate HZ]\n"
              << "                   [--name NAME] [--text TEXT] [--min-matched N] [--min-received N]\n"
              << "                   [--exit-on-success] [--transport udp|default]\n";
    return 2;
}

bool parse_num(const char* s, double& out)
{
    char* end = nullptr;
    out = std::strtod(s, &end);
    return end != s && *end == '\0' && out >= 0;
}

}  // namespace

int main(int argc, char** argv)
{
    Options o;
    if (const char* d = std::getenv("ROS_DOMAIN_ID"))
    {
        double v;
        if (*d && parse_num(d, v))
        {
            o.domain = static_cast<uint32_t>(v);
        }
    }
    for (int i = 1; i < argc; ++i)
    {
        const std::string a = argv[i];
        auto value = [&](double& v) {
            return i + 1 < argc && parse_num(argv[++i], v);
        };
        double v = 0;
        if (a == "--domain" && value(v) && v <= 232)
        {
            o.domain = static_cast<uint32_t>(v);
        }
        else if (a == "--duration" && value(v))
        {
            o.duration = v;
        }
        else if (a == "--rate" && value(v))
        {
            o.rate = v;
        }
        else if (a == "--min-matched" && value(v))
        {
            o.min_matched = static_cast<long>(v);
        }
        else if (a == "--min-received" && value(v))
        {
            o.min_received = static_cast<long>(v);
        }
        else if (a == "--topic" && i + 1 < argc)
        {
            o.topic = argv[++i];
        }
        else if (a == "--name" && i + 1 < argc)
        {
            o.name = argv[++i];
        }
        else if (a == "--text" && i + 1 < argc)
        {
            o.text = argv[++i];
        }
        else if (a == "--exit-on-success")
        {
            o.exit_on_success = true;
        }
        else if (a == "--transport" && i + 1 < argc)
        {
            const std::string t = argv[++i];
            if (t != "udp" && t != "default")
            {
                return usage("--transport takes udp or default");
            }
            o.udp_only = t == "udp";
        }
        else if (a == "-h" || a == "--help")
        {
            usage("help");
            return 0;
        }
        else
        {
            return usage(("bad argument: " + a).c_str());
        }
    }

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);

    DomainParticipantQos pq = PARTICIPANT_QOS_DEFAULT;
    pq.name(o.name);
    if (o.udp_only)
    {
        pq.transport().use_builtin_transports = false;
        pq.transport().user_transports.push_back(
            std::make_shared<eprosima::fastdds::rtps::UDPv4TransportDescriptor>());
    }

    State state;
    auto* factory = DomainParticipantFactory::get_instance();
    DomainParticipant* participant = factory->create_participant(o.domain, pq, &state, StatusMask::none());
    if (participant == nullptr)
    {
        std::cerr << "participant: cannot create a participant in domain " << o.domain << "\n";
        return 2;
    }
    state.own = participant->guid().guidPrefix;

    TypeSupport type(new StringType());
    type.register_type(participant);
    Topic* topic = participant->create_topic(o.topic, type.get_type_name(), TOPIC_QOS_DEFAULT);
    Publisher* pub = participant->create_publisher(PUBLISHER_QOS_DEFAULT);
    Subscriber* sub = participant->create_subscriber(SUBSCRIBER_QOS_DEFAULT);
    if (topic == nullptr || pub == nullptr || sub == nullptr)
    {
        std::cerr << "participant: cannot create topic/publisher/subscriber\n";
        return 2;
    }
    line("ready guid=" + hex_prefix(state.own) + " domain=" + std::to_string(o.domain) +
            " transport=" + (o.udp_only ? "udp" : "default"));

    // The participant listener has an empty status mask, so it only gets
    // participant discovery; the writer and reader get their own callbacks.
    DataWriter* writer = pub->create_datawriter(topic, DATAWRITER_QOS_DEFAULT, &state);
    DataReader* reader = sub->create_datareader(topic, DATAREADER_QOS_DEFAULT, &state);
    if (writer == nullptr || reader == nullptr)
    {
        std::cerr << "participant: cannot create the writer or the reader\n";
        return 2;
    }

    const auto start = std::chrono::steady_clock::now();
    const auto end = start + std::chrono::duration<double>(o.duration);
    const auto period = o.rate > 0 ? std::chrono::duration<double>(1.0 / o.rate)
                                   : std::chrono::duration<double>(0.1);
    auto next = start;
    long sent = 0;
    auto ok = [&]() {
        return state.max_matched >= o.min_matched && state.received >= o.min_received;
    };
    while (!stop && std::chrono::steady_clock::now() < end)
    {
        if (o.rate > 0 && std::chrono::steady_clock::now() >= next)
        {
            StringMsg m{o.text + " " + std::to_string(sent + 1)};
            if (writer->write(&m))
            {
                ++sent;
            }
            next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(period);
        }
        if (o.exit_on_success && ok())
        {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const bool success = ok();
    line("done matched=" + std::to_string(state.max_matched.load()) + " received=" +
            std::to_string(state.received.load()) + " sent=" + std::to_string(sent) +
            " ok=" + (success ? "1" : "0"));

    // Detach listeners before deleting, so no callback runs into a dying object.
    writer->set_listener(nullptr);
    reader->set_listener(nullptr);
    participant->set_listener(nullptr);
    participant->delete_contained_entities();
    factory->delete_participant(participant);
    return success ? 0 : 1;
}
